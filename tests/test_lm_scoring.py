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
