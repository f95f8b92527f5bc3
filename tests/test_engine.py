"""The batched inference engine and the transformer scorer against an unbatched reference."""

import random

import numpy as np
import pytest
import torch

from support import make_tiny_classifier
from winnow.flows.demo import article
from winnow.gpu.engine import plan_batches
from winnow.scorers.transformer import TransformerScorer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    rng = random.Random(0)
    texts = [article(rng) for _ in range(200)]
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny") / "clf", texts, num_labels=3), texts


def test_plan_batches_respects_the_token_budget_and_covers_every_document():
    rng = random.Random(1)
    lengths = [rng.randint(1, 500) for _ in range(300)]
    batches = plan_batches(lengths, max_tokens=2048)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    for batch in batches:
        width = -(-max(lengths[i] for i in batch) // 8) * 8
        assert width * len(batch) <= 2048 or len(batch) == 1


def test_engine_matches_unbatched_reference_in_input_order(tiny_model):
    path, texts = tiny_model
    rng = random.Random(2)
    docs = [" ".join(t.split()[: rng.randint(3, 400)]) for t in texts[:60]]  # mixed lengths
    scorer = TransformerScorer(path, max_batch_tokens=4096, device="cpu")
    batched = scorer.predict_all(docs)
    ids = scorer.encode(docs)
    with torch.inference_mode():
        for i, token_ids in enumerate(ids):  # one document, no padding, no mask tricks
            logits = scorer.model(input_ids=torch.tensor([token_ids])).logits
            expected = torch.softmax(logits, dim=-1)[0].numpy()
            got = np.array([batched[label][i] for label in scorer.labels])
            np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"document {i}")
    # length sorting pads far less than batches of 8 in input order padded to their longest
    naive = sum(8 * max(len(t) for t in ids[i:i + 8]) for i in range(0, len(ids), 8))
    assert scorer.engine.padded_tokens < 0.75 * naive


def test_scorer_labels_and_missing_directory(tiny_model, tmp_path):
    path, _ = tiny_model
    scorer = TransformerScorer(path, device="cpu")
    assert scorer.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    probs = scorer.predict_all(["a short text", "another one"])
    assert np.allclose(sum(probs.values()), 1.0, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TransformerScorer(tmp_path)


def test_regression_head_feeds_the_quality_stage(tmp_path):
    """A FineWeb-Edu-style regressor (one output) scored through the quality stage."""
    from conftest import documents
    from winnow.stages.quality import Quality, QualityConfig

    rng = random.Random(5)
    texts = [article(rng) for _ in range(40)]
    path = make_tiny_classifier(tmp_path / "edu", texts, num_labels=1)
    assert TransformerScorer(path, device="cpu").labels == ["score"]
    table = documents(texts)
    cfg = QualityConfig(name="quality", scorer={"model": str(path), "kind": "transformer", "device": "cpu"},
                        threshold=-100.0)  # regression scores are not probabilities: any float is allowed
    result = Quality(cfg).apply(table)
    assert result.kept.num_rows == 40
    expected = TransformerScorer(path, device="cpu").predict(texts)
    np.testing.assert_allclose(result.kept.column("quality_score").to_numpy(), expected, atol=1e-5)


def test_gpu_side_modules_import_where_only_torch_transformers_triton_pyarrow_numpy_are():
    """The GPU benchmarks run on a machine without Ray, Prefect, fastText, polars or pydantic: the
    modules they use must import there (checked by refusing those imports in a fresh interpreter)."""
    import subprocess
    import sys

    probe = """
import importlib.abc, sys
BLOCKED = {"ray", "prefect", "fasttext", "polars", "pydantic", "datasketch", "boto3", "yaml", "rich"}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not on the GPU machine")
sys.meta_path.insert(0, Refuse())
import winnow.gpu.engine, winnow.gpu.fused_ce, winnow.scorers.transformer, winnow.scorers.lm
import winnow.scorers.generate, winnow.scorers.tokenizer
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
