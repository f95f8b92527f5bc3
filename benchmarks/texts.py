"""Benchmark text: the shared C4 samples where `../shared` exists, else (a bare GPU machine, which gets
only the repository) text generated to the same lengths, so throughput figures still mean tokens of
web-length documents. Imports nothing beyond the standard library."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
C4 = [SHARED / "web" / "c4_train_first1k" / "c4_sample.jsonl",
      SHARED / "web" / "olmo_c4_sample_1k" / "c4-sample.00000-of-00001.json.gz"]
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there one all we their been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way well "
         "down should because each just those people how too little state good very make world still own see men work "
         "long get here between both life being under never day same another know while last might us great old year "
         "off come since against go came right used take three garden river market council music science "
         "history").split()


def c4_texts() -> list[str]:
    """About 2,000 web documents: real C4 text, or generated text of the same length distribution."""
    if all(path.exists() for path in C4):
        texts = []
        for path in C4:
            with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
                texts += [json.loads(line)["text"] for line in f]
        return texts
    print(f"note: {SHARED} not found; generated text of C4-like lengths stands in for C4", file=sys.stderr)
    rng = random.Random(0)
    texts = []
    for _ in range(2000):
        words = int(min(rng.lognormvariate(6.0, 0.8), 8000))
        sentences = []
        while words > 0:
            n = min(words, rng.randint(6, 24))
            sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
            words -= n
        texts.append(" ".join(sentences))
    return texts
