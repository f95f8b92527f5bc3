"""Rephrase: WRAP prompts, sentence chunking, style dealing, the transformers backend end to end,
the openai backend against a real HTTP server with injected faults, resume, and the dry run."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from openai_server import OpenAICompatibleServer

from conftest import documents, text_lines
from support import run_stage
from winnow.runtime import RuntimeOptions, Shard
from winnow.scorers.generate import load_token_counter
from winnow.stages.rephrase import Rephrase, RephraseConfig, chunk_text, render_prompt, styles_for
from winnow.storage.fs import resolve

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def web_texts(n: int) -> list[str]:
    lines = text_lines("web/c4_sample.jsonl.gz")
    return [json.loads(line)["text"] for line, _ in zip(lines, range(n), strict=False)]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random GPT-2 with winnow's BPE: real `generate`, nonsense text (no weights can be downloaded)."""
    from winnow.scorers.lm import make_tiny_lm
    from winnow.scorers.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("lm")
    tokenizer = train_bpe(web_texts(300), 1000, root / "bpe")
    return str(make_tiny_lm(root / "lm", tokenizer, context=512, hidden=64, layers=2))


def config(**kw) -> RephraseConfig:
    return RephraseConfig(**{"name": "rephrase", "backend": "transformers", "model": "unused", **kw})


def test_each_style_renders_the_wrap_prompt_exactly():
    system = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
              "detailed, and polite answers to the questions.")
    expected = {
        "easy": "For the following paragraph give me a paraphrase of the same using a very small vocabulary and "
                "extremely simple sentences that a toddler will understand:",
        "wiki": "For the following paragraph give me a diverse paraphrase of the same in high quality English "
                "language as in sentences on Wikipedia:",
        "hard": "For the following paragraph give me a paraphrase of the same using very terse and abstruse language "
                "that only an erudite scholar will understand. Replace simple words and phrases with rare and "
                "complex ones:",
        "qa": 'Convert the following paragraph into a conversational format with multiple tags of "Question:" '
              'followed by "Answer:":',
    }
    text = "Cats sleep {a lot}."
    for style, instruction in expected.items():
        assert render_prompt(config(), style, text) == f"{system} USER: {instruction} {text} ASSISTANT:"
    assert render_prompt(config(chat=True, system_prompt="Be brief."), "qa", text) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{expected['qa']}\n\n{text}"}]
    custom = config(template="{instruction}\n---\n{text}\n---", instructions={"wiki": "Rewrite:"})
    assert render_prompt(custom, "wiki", text) == "Rewrite:\n---\nCats sleep {a lot}.\n---"
    with pytest.raises(ValueError, match="unknown style"):
        config(instructions={"poem": "x"})
    with pytest.raises(ValueError, match="more synthetic text per document than its 1 style"):
        config(styles=["qa"], mix=2)


def test_chunks_end_at_sentences_stay_under_the_limit_and_lose_no_word(tiny_lm):
    count = load_token_counter(config(model=tiny_lm))
    texts = web_texts(40) + ["word " * 700]  # the last: one 700-token "sentence", cut between words
    for text in texts:
        chunks = chunk_text(text, 60, count)
        assert " ".join(chunks).split() == text.split()
        for chunk in chunks:
            sentences = [s for s in chunk.replace("\n", " ").split(". ") if s]
            assert sum(count([s.strip() for s in sentences])) <= 60 + len(sentences)  # spaces re-joining sentences
    long_chunks = chunk_text(texts[-1], 60, count)
    assert len(long_chunks) >= 700 // 60 and max(count(long_chunks)) <= 60
    assert chunk_text("", 60, count) == []


def test_mix_deals_styles_by_a_seeded_hash():
    ids = [f"doc-{i}" for i in range(2000)]
    one = config(styles=["wiki", "qa"], mix=1.0)
    picks = [styles_for(one, i) for i in ids]
    assert all(len(p) == 1 for p in picks) and 800 < sum(p == ["qa"] for p in picks) < 1200
    assert picks == [styles_for(one, i) for i in ids]  # deterministic
    assert all(sorted(styles_for(config(styles=["wiki", "qa"], mix=2), i)) == ["qa", "wiki"] for i in ids[:50])
    half = sum(len(styles_for(config(mix=0.5), i)) for i in ids)
    assert 850 < half < 1150
    assert picks != [styles_for(one.model_copy(update={"seed": 1}), i) for i in ids]


def run_rephrase(cfg: RephraseConfig, shards: list[Shard], out) -> tuple:
    manifest, _ = run_stage(Rephrase(cfg), shards, resolve(str(out)), "h", RuntimeOptions(run_id="t", progress=False))
    kept = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    rejects = pq.read_table(out / "rejects") if (out / "rejects").exists() else None
    return manifest, kept, rejects


def write_shards(tmp_path, texts: list[str], n: int) -> list[Shard]:
    shards = []
    for s in range(n):
        path = tmp_path / "in" / f"part-{s:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        part = list(range(s, len(texts), n))
        pq.write_table(documents([texts[i] for i in part], [f"doc-{i}" for i in part]), path)
        shards.append(Shard(path.stem, resolve(str(path))))
    return shards


@pytest.mark.usefixtures("ray_local")
def test_transformers_backend_end_to_end_on_ray(tmp_path, tiny_lm):
    texts = [t[:1500] for t in web_texts(16)]
    shards = write_shards(tmp_path, texts, 2)
    cfg = config(model=tiny_lm, styles=["wiki", "qa"], mix=1.5, mix_by="rows", chunk_tokens=120, max_new_tokens=24,
                 temperature=0.8, batch_size=8, device="cpu")
    manifest, kept, rejects = run_rephrase(cfg, shards, tmp_path / "out")

    synthetic = kept.filter(pa.compute.is_valid(kept.column("rephrase_of")))
    n_rejected = rejects.num_rows if rejects is not None else 0
    assert manifest.rows_in == 16 and manifest.rows_added == synthetic.num_rows + n_rejected
    assert manifest.rows_in + manifest.rows_added == manifest.rows_out + manifest.rows_rejected
    assert manifest.rows_out == kept.num_rows == 16 + synthetic.num_rows
    originals = kept.filter(pa.compute.is_null(kept.column("rephrase_of")))
    assert sorted(originals.column("text").to_pylist()) == sorted(texts)  # real rows pass through untouched
    assert synthetic.num_rows >= 16  # mix 1.5: 16 documents, one or two styles each
    for row in synthetic.to_pylist():
        assert row["id"] == f"{row['rephrase_of']}~{row['rephrase_style']}"
        assert row["rephrase_style"] in ("wiki", "qa") and row["text"].strip()
        meta = json.loads(row["meta"])["rephrase"]
        assert meta["backend"] == "transformers" and meta["model"] == tiny_lm and meta["chunks"] >= 1
    assert len(set(kept.column("id").to_pylist())) == kept.num_rows
    count = load_token_counter(cfg)  # the manifest counts real and synthetic tokens with the chunking tokenizer
    assert manifest.counters == {"real_tokens": sum(count(texts)),
                                 "synthetic_tokens": sum(count(synthetic.column("text").to_pylist()))}

    # Seeded: a second run from scratch writes the same synthetic rows.
    _, again, _ = run_rephrase(cfg, shards, tmp_path / "again")
    assert again.column("text").to_pylist() == kept.column("text").to_pylist()


def test_openai_backend_survives_throttling_errors_and_a_hung_request(tmp_path, tiny_lm, monkeypatch):
    key = "sk-test-not-a-real-key-123"
    monkeypatch.setenv("WINNOW_TEST_KEY", key)
    texts = [t[:600] for t in web_texts(6)] + ["Please REFUSE-ME politely. It is a test.",
                                                 "This one is EMPTY-ME. Nothing comes back.",
                                                 "And this FAIL-ME document always fails. Sadly."]
    table = documents(texts)
    with OpenAICompatibleServer(tiny_lm, api_key=key, chat_template=CHAT_TEMPLATE) as server:
        for chat in (False, True):
            server.faults.extend(["429", "500", "hang", "429", "503"])
            cfg = RephraseConfig(name="rephrase", backend="openai", model="tiny", styles=["wiki"], mix=1.0,
                                 chat=chat, tokenizer=tiny_lm, chunk_tokens=80, max_new_tokens=12, temperature=0,
                                 openai={"base_url": server.url, "api_key_env": "WINNOW_TEST_KEY", "concurrency": 3,
                                         "timeout_s": 2.0, "max_retries": 4, "backoff_s": 0.01})
            stage = Rephrase(cfg)
            jobs = stage.jobs_for(table)
            requests_before = server.requests
            result = stage.apply(table, jobs)

            prompts = sum(len(chunks) for _, _, chunks in jobs)
            # every prompt once, the five injected faults retried, FAIL-ME's five attempts
            assert server.requests - requests_before == prompts + 5 + 4
            reasons = dict(zip(result.rejects.column("id").to_pylist(),
                               result.rejects.column("reject_reason").to_pylist(), strict=True))
            assert reasons == {"d6~wiki": "rephrase_refusal", "d7~wiki": "rephrase_empty",
                               "d8~wiki": "rephrase_http_error"}
            detail = result.rejects.filter(pa.compute.equal(result.rejects.column("id"), "d8~wiki"))
            assert "HTTP 500" in detail.column("reject_detail")[0].as_py()
            assert "after 5 attempts" in detail.column("reject_detail")[0].as_py()
            assert key not in str(result.rejects.to_pylist()) + str(result.kept.to_pylist())
            synthetic = result.kept.filter(pa.compute.is_valid(result.kept.column("rephrase_of")))
            assert sorted(synthetic.column("rephrase_of").to_pylist()) == [f"d{i}" for i in range(6)]
            assert result.rows_in + result.rows_added == result.kept.num_rows + result.rejects.num_rows

        # A wrong key is an HTTP 401: not retried, every chunk rejected with the reason, nothing lost.
        monkeypatch.setenv("WINNOW_TEST_KEY", "wrong")
        result = Rephrase(cfg).apply(documents(texts[:2]))
        assert result.rejects.column("reject_reason").to_pylist() == ["rephrase_http_error"] * 2
        assert "HTTP 401" in result.rejects.column("reject_detail")[0].as_py()


@pytest.mark.usefixtures("ray_local")
def test_resume_generates_only_for_uncommitted_shards(tmp_path, tiny_lm):
    texts = [t[:400] for t in web_texts(12)]
    shards = write_shards(tmp_path, texts, 3)
    with OpenAICompatibleServer(tiny_lm) as server:
        cfg = RephraseConfig(name="rephrase", backend="openai", model="tiny", styles=["qa"], mix=1.0,
                             tokenizer=tiny_lm, max_new_tokens=8, temperature=0, openai={"base_url": server.url})
        out = tmp_path / "out"
        run_rephrase(cfg, shards[:2], out)  # the "crash": shard 3 never ran, and no manifest was written
        (out / "_manifest.json").unlink()
        first = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
        answered = server.prompts_answered
        manifest, kept, _ = run_rephrase(cfg, shards, out)
        prompts_shard_3 = sum(len(chunks) for _, _, chunks in
                              Rephrase(cfg).jobs_for(pq.read_table(shards[2].source.uri)))
        assert server.prompts_answered - answered == prompts_shard_3
        assert {p: (out / p).read_bytes() for p in first} == first
        assert manifest.rows_in == 12 and manifest.rows_added == 12
        assert manifest.rows_out + manifest.rows_rejected == 24 and kept.num_rows == manifest.rows_out


@pytest.mark.slow
@pytest.mark.usefixtures("session_prefect_api")
def test_dry_run_prints_prompt_counts_and_token_estimates_without_generating(tmp_path, tiny_lm):
    (tmp_path / "in").mkdir()
    rows = [json.dumps({"text": t}) for t in web_texts(10)]
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(rows) + "\n")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({
        "input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"), "runtime": {"progress": False},
        "stages": [{"name": "ingest"},
                   {"name": "rephrase", "backend": "openai", "model": "m", "styles": ["easy", "qa"], "mix": 2,
                    "tokenizer": tiny_lm, "max_new_tokens": 100,
                    "openai": {"base_url": "http://127.0.0.1:9/v1"}}]}))  # nothing listens: generating would fail
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "run", str(config_file), "--dry-run"],
                            capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rephrase would rephrase 10 of 10 documents into 20 synthetic rows" in result.stdout
    prompts = int(result.stdout.split("prompts: ")[1].split()[0].replace(",", ""))
    assert prompts >= 20 and f"at most {prompts * 100:,}" in result.stdout
    assert not (tmp_path / "out" / "rephrase").exists()


def test_rephrase_mix_by_tokens_reaches_the_token_ratio(tmp_path, tiny_lm):
    """Item 7 of issue 13: WRAP mixes real and synthetic text 1:1 by tokens. The stand-in generator writes
    at most 10 tokens per ~30-token document, so one synthetic row per document (the row mix) drifts to
    about 0.3 synthetic tokens per real one; the token mix gives later documents more styles until the
    shard's ratio is back at its 1:1 target."""
    texts = [" ".join(t.split()[:12]) for t in web_texts(60)]
    path = tmp_path / "part-00000.parquet"
    pq.write_table(documents(texts), path)

    def achieved(**kw) -> float:
        stage = Rephrase(config(model=tiny_lm, styles=["easy", "wiki", "hard", "qa"], mix=1.0, chunk_tokens=200,
                                max_new_tokens=10, temperature=0, batch_size=32, device="cpu", **kw))
        results = list(stage.process_shard(resolve(str(path)), batch_size=6))
        real = sum(r.counters["real_tokens"] for r in results)
        assert real == sum(load_token_counter(stage.config)(texts))
        return sum(r.counters["synthetic_tokens"] for r in results) / real

    by_rows, by_tokens = achieved(mix_by="rows"), achieved()
    print(f"\nsynthetic:real tokens, target 1.0: mix_by rows {by_rows:.3f}, mix_by tokens {by_tokens:.3f}")
    assert by_rows < 0.5
    assert abs(by_tokens - 1.0) < 0.15
