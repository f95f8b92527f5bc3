"""Fused/chunked LM-head cross-entropy and the causal-LM document scorer."""

import math
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from winnow.flows.demo import article
from winnow.gpu.fused_ce import chunked_nll
from winnow.scorers.lm import LMScorer, make_tiny_lm
from winnow.scorers.tokenizer import train_bpe


@pytest.mark.parametrize("vocab", [1000, 50257, 65536])
def test_chunked_nll_matches_full_logits(vocab):
    torch.manual_seed(0)
    hidden, weight = torch.randn(300, 64), torch.randn(vocab, 64) * 0.2
    targets = torch.randint(0, vocab, (300,))
    full = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    got = chunked_nll(hidden, weight, targets, chunk=128)
    torch.testing.assert_close(got, full, rtol=1e-3, atol=1e-5)


def test_triton_kernel_matches_reference_in_the_interpreter():
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from winnow.gpu.fused_ce import chunked_nll, triton_nll
        torch.manual_seed(1)
        for n, vocab, dim in [(70, 3000, 64), (5, 517, 40)]:  # ragged sizes exercise the masks
            h, w = torch.randn(n, dim), torch.randn(vocab, dim) * 0.3
            t = torch.randint(0, vocab, (n,))
            torch.testing.assert_close(triton_nll(h, w, t), chunked_nll(h, w, t), rtol=1e-3, atol=1e-4)
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    rng = random.Random(0)
    tokenizer = train_bpe((article(rng) for _ in range(200)), 600, root / "bpe")
    return make_tiny_lm(root / "lm", tokenizer, context=64)


def test_scores_equal_the_models_own_loss_for_short_documents(tiny_lm):
    scorer = LMScorer(tiny_lm, device="cpu")
    texts = ["Our team gently water the tomato plants.", "A farmer patiently prune the fruit trees today!"]
    scores = scorer.score(texts)
    for i, text in enumerate(texts):
        ids = [scorer.start_id] + scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            loss = scorer.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
        assert scores["n_tokens"][i] == len(ids) - 1
        assert math.isclose(scores["total_nll"][i], loss * (len(ids) - 1), rel_tol=1e-4)
        assert math.isclose(scores["bits_per_char"][i], scores["total_nll"][i] / (len(text) * math.log(2)))


def test_sliding_window_scores_every_token_once(tiny_lm):
    text = " ".join(article(random.Random(3)) for _ in range(3))
    for stride in (16, 32, 64):
        scorer = LMScorer(tiny_lm, context=64, stride=stride, device="cpu")
        ids = scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 200
        windows = scorer.windows(ids)
        assert sum(n for _, n in windows) == len(ids)
        assert all(len(w) <= 64 and n < len(w) for w, n in windows)
        nll = scorer.token_nlls([text])[0]
        assert len(nll) == len(ids) and np.isfinite(nll).all()
    with pytest.raises(ValueError, match="stride 80 must be in"):
        LMScorer(tiny_lm, context=64, stride=80, device="cpu")


def tiny_causal_lm(kind: str, path, tokenizer_dir):
    """A randomly initialised model of one architecture family, with winnow's tokenizer, saved locally."""
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id}
    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 128, **common}
    configs = {
        "llama": ("LlamaConfig", "LlamaForCausalLM", small),
        "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
                                                   **common}),
        "phi": ("PhiConfig", "PhiForCausalLM", small),  # output bias
        "gptj": ("GPTJConfig", "GPTJForCausalLM", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
                                                   "rotary_dim": 8, **common}),  # output bias
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**small, "head_dim": 16, "final_logit_softcapping": 0.5,
                                                         "pad_token_id": 0}),  # soft-capping (small: it bites)
        "granite": ("GraniteConfig", "GraniteForCausalLM", {**small, "logits_scaling": 0.25}),
        "cohere": ("CohereConfig", "CohereForCausalLM", {**small, "logit_scale": 3.0}),
    }
    config_class, model_class, kwargs = configs[kind]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**kwargs))
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        torch.nn.init.normal_(model.get_output_embeddings().bias, std=2.0)  # a bias that matters
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["llama", "gpt2", "phi", "gptj", "gemma2", "granite", "cohere"])
def test_nll_equals_the_models_own_loss_for_every_head(tiny_lm, tmp_path, kind):
    """Item 3 of issue 13: output bias (Phi, GPT-J), soft-capping (Gemma 2) and logit scaling (Granite,
    Cohere) are part of the score: total NLL = model(input_ids, labels).loss x scored tokens."""
    path = tiny_causal_lm(kind, tmp_path / kind, tiny_lm)
    scorer = LMScorer(path, device="cpu")
    texts = ["Our team gently water the tomato plants.", " ".join(article(random.Random(5)).split()[:30])]
    scores = scorer.score(texts)
    for i, text in enumerate(texts):
        ids = [scorer.start_id] + scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            loss = scorer.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
        assert math.isclose(scores["total_nll"][i], loss * (len(ids) - 1), rel_tol=1e-4), kind
    assert scorer.head is not None  # every one of these heads is reproduced by the fused path


def test_a_head_winnow_does_not_know_falls_back_to_the_models_logits(tiny_lm, tmp_path):
    """A head with a part the fused path does not reproduce is caught by the load-time probe: scores
    come from the model's own logits and still equal its loss."""
    from transformers import GPT2LMHeadModel

    path = tiny_causal_lm("gpt2", tmp_path / "odd", tiny_lm)

    class OddHead(GPT2LMHeadModel):  # a logit transform the config does not announce
        def forward(self, *args, labels=None, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0 + 1.0
            if labels is not None:
                logits, target = out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
                out.loss = torch.nn.functional.cross_entropy(logits.float(), target)
            return out

    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained
    AutoModelForCausalLM.from_pretrained = lambda p, **k: OddHead.from_pretrained(p, **k)
    try:
        scorer = LMScorer(path, device="cpu")
    finally:
        AutoModelForCausalLM.from_pretrained = original
    assert scorer.head is None
    text = "A farmer prunes the fruit trees."
    ids = [scorer.start_id] + scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        loss = scorer.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    total = scorer.score([text])["total_nll"][0]
    assert math.isclose(total, loss * (len(ids) - 1), rel_tol=1e-4)


def test_triton_kernel_reproduces_bias_scale_and_softcap_in_the_interpreter():
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from winnow.gpu.fused_ce import chunked_nll, head_logits, triton_nll
        torch.manual_seed(2)
        h, w, b = torch.randn(37, 48), torch.randn(700, 48), torch.randn(700)
        t = torch.randint(0, 700, (37,))
        for bias, scale, softcap in [(b, 1.0, None), (None, 0.25, None), (b, 2.0, 3.0)]:
            full = torch.nn.functional.cross_entropy(head_logits(h, w, bias, scale, softcap), t, reduction="none")
            torch.testing.assert_close(chunked_nll(h, w, t, bias=bias, scale=scale, softcap=softcap), full)
            torch.testing.assert_close(triton_nll(h, w, t, bias, scale, softcap), full, rtol=1e-4, atol=1e-4)
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
