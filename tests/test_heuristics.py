import json
import random

import pytest

from conftest import documents, text_lines
from winnow.flows.demo import article
from winnow.stages.heuristics import Evaluator, Heuristics, HeuristicsConfig, split_words

DEFAULT = HeuristicsConfig(name="heuristics")
GOOD = article(random.Random(3))  # a clean generated article (the demo corpus generator)


def reason(text, config=DEFAULT, only=None):
    return Evaluator(config, only=only).evaluate(text)[0]


def test_a_well_formed_article_passes_every_rule():
    assert reason(GOOD) is None


@pytest.mark.parametrize("text, expected", [
    ("Too short to be a document.", "gopher_quality.min_doc_words"),
    (" ".join(f"#tag{i} word{i}" for i in range(40)) + " and the end of the sentence.", "gopher_quality.hash_ratio"),
    ("\n".join(f"Line {i} of the story trails off with an ellipsis and more words..." for i in range(12)),
     "gopher_quality.ellipsis_lines_ratio"),
    ("\n".join(f"• bullet {i} of the list with several more words in it" for i in range(12)),
     "gopher_quality.bullet_lines_ratio"),
    (" ".join(["supercalifragilisticexpialidocious"] * 60) + " the and of to with",
     "gopher_quality.max_avg_word_length"),
    (" ".join(f"item {i * 13} costs {i * 7} dollars" for i in range(30)) + " the and",
     "gopher_quality.alpha_words_ratio"),
    ("Lorem ipsum dolor sit amet, the consectetur adipiscing elit and so on.\n" + GOOD, "c4.lorem_ipsum"),
    ("The function f() { return 1; } is the code that we want to show.\n" + GOOD, "c4.curly_bracket"),
    ("\n".join(["No full stop on this line at all"] * 3 + ["One sentence here."] * 2), "c4.min_num_sentences"),
    ("\n\n".join(["This exact paragraph is repeated many times over the page."] * 6) + "\n\n" + GOOD,
     "gopher_repetition.dup_para_frac"),
    ("buy cheap watches online now " * 40, "gopher_repetition.top_2_gram"),
])
def test_each_rule_fires_on_a_document_built_to_break_it(text, expected):
    assert reason(text, only=expected.split(".")[0]) == expected


def test_rules_switch_off_and_thresholds_apply():
    short = "Too short to be a document."
    cfg = HeuristicsConfig(name="heuristics", gopher_quality={"min_doc_words": None},
                           c4={"enabled": False}, gopher_repetition={"enabled": False}, fineweb={"enabled": False})
    assert reason(short, cfg) is None
    cfg = HeuristicsConfig(name="heuristics", gopher_quality={"min_doc_words": 5})
    assert reason(short, cfg, only="gopher_quality") is None


def test_fineweb_rules():
    menu = "\n".join(["Home", "About", "Shop", "Contact", "Login", "Blog", "FAQ", "Cart", "Search", "Help",
                      "Jobs", "Press", "Terms", "Sitemap"]) + "\n" + GOOD
    assert reason(menu, only="fineweb") == "fineweb.short_line_ratio"
    dup_lines = GOOD + "\n" + "\n".join(["Share this page with your friends today."] * 3)
    assert reason(dup_lines, only="fineweb") == "fineweb.char_dup_ratio"
    no_punct = "\n".join(f"item number {i} in a long list of things without any ending" for i in range(20))
    assert reason(no_punct, only="fineweb") == "fineweb.line_punct_ratio"


def test_c4_drops_lines_it_does_not_keep():
    text = GOOD + "\nPlease enable JavaScript to view the comments powered by a service.\nShare"
    reason_, _, cleaned = Evaluator(DEFAULT).evaluate(text)
    assert reason_ is None
    assert "JavaScript" not in cleaned and not cleaned.endswith("Share")
    keep_cfg = HeuristicsConfig(name="heuristics", c4={"clean_lines": False})
    assert Evaluator(keep_cfg).evaluate(text)[2] == text


def test_word_splitting_follows_spacy_conventions():
    assert split_words("It's the U.S. way, don't you think? Dr. Who e-mail") == [
        "It", "'s", "the", "U.S.", "way", ",", "do", "n't", "you", "think", "?", "Dr.", "Who", "e", "-", "mail"]


def test_whitespace_words_count_chunks_not_spacy_tokens():
    """`words: whitespace` splits words as NeMo Curator's filters do, at whitespace, punctuation attached."""
    fast = HeuristicsConfig(name="heuristics", words="whitespace")
    # spaCy: People do n't have to understand that . -> 7 words that are not punctuation; whitespace: 6
    text = "People don't have to understand that. " * 8
    assert reason(text, only="gopher_quality") is None  # 56 words
    assert Evaluator(fast, only="gopher_quality").evaluate(text)[:2] == (
        "gopher_quality.min_doc_words", "48 words < 50")
    # average word length: "Hi, yo." is two words of 3 characters (spaCy: Hi , yo . -> two of 2)
    short = ("Hi, yo. " * 60).strip()
    assert reason(short, only="gopher_quality") == "gopher_quality.min_avg_word_length"
    assert Evaluator(fast, only="gopher_quality").evaluate(short)[:2] == (
        "gopher_quality.min_stop_words", "0 distinct stop words < 2")
    # C4's sentences: a word ending in a terminal mark ends one, as a terminal token does in spaCy's
    lines = "\n".join(["One two three. Four five six! Seven eight nine?"] * 2)
    assert Evaluator(fast, only="c4").evaluate(lines)[0] is None  # 6 sentences >= 5
    assert Evaluator(fast, only="c4").evaluate(lines.split("\n")[0])[:2] == (
        "c4.min_num_sentences", "3 sentences in kept lines < 5")
    assert reason(lines.split("\n")[0], only="c4") == "c4.min_num_sentences"


def test_stage_on_a_table_counts_add_up_and_rejects_name_the_rule():
    texts = [GOOD, "Too short.", "buy cheap watches online now " * 40]
    # the order FineWeb's pipeline uses: repetition rules first
    table = documents(texts, ["a", "b", "c"])
    result = Heuristics(DEFAULT).apply(table)
    assert result.kept.column("id").to_pylist() == ["a"]
    assert result.rejects.column("id").to_pylist() == ["b", "c"]
    assert result.rejects.column("reject_reason").to_pylist() == ["gopher_repetition.top_2_gram",
                                                                 "gopher_repetition.top_2_gram"]
    # the bigram "Too short": 9 of 10 characters
    assert result.rejects.column("reject_detail")[0].as_py() == "0.900 > 0.2"
    assert result.rows_in == result.kept.num_rows + result.rejects.num_rows
    all_kept = Heuristics(DEFAULT).apply(table.slice(0, 1))  # a batch with nothing to reject
    assert all_kept.kept.num_rows == 1 and all_kept.rejects.num_rows == 0


def test_rules_fire_as_documented_on_hand_picked_c4_documents():
    docs = [json.loads(line)["text"] for line in text_lines("web/c4_sample.jsonl.gz")]
    evaluator = Evaluator(DEFAULT)
    # 0: "Beginners BBQ Class Taking Place in Missoula!" - a normal article.
    assert evaluator.evaluate(docs[0])[0] is None
    # 2: a 30-word costume product blurb.
    assert evaluator.evaluate(docs[2])[0] == "gopher_quality.min_doc_words"
    # 14: hotel page repeating "East Bourne Resort & Spa Shimla" in every sentence.
    assert evaluator.evaluate(docs[14])[0] == "gopher_repetition.top_3_gram"
    # 86: car listing whose feature list is repeated.
    assert evaluator.evaluate(docs[86])[0] == "gopher_repetition.dup_5_gram"
    # 623: Title-Cased warez download page: no lower-case stop words at all.
    assert evaluator.evaluate(docs[623])[0] == "gopher_quality.min_stop_words"
    # 775: food blog post full of #hashtags.
    assert evaluator.evaluate(docs[775])[0] == "gopher_quality.hash_ratio"
    # 45: after C4's line filters only four sentences remain.
    assert evaluator.evaluate(docs[45])[0] == "c4.min_num_sentences"
    outcomes = [evaluator.evaluate(d)[0] for d in docs]
    assert 0.6 < outcomes.count(None) / len(docs) < 0.8  # C4 is already filtered; most documents pass


def test_code_and_chat_logs_are_filtered():
    code = next(json.loads(line)["contents"] for line in text_lines("web/toy_pile_data.jsonl.gz"))
    assert code.startswith("/*") and reason(code) is not None


def test_words_are_spacys_english_tokens_on_real_text():
    """Words equal spaCy's own English tokenizer's (the reference: `Tokenizer.explain`, spaCy's Python
    account of its tokenizer, which datatrove's filters run) on real web text and hand-picked cases,
    and splitting line by line gives the text's words."""
    spacy = pytest.importorskip("spacy", reason="spaCy (dev extra) is the reference")
    from winnow.stages.heuristics import Doc
    from winnow.stages.lib.spacy_words import RULES

    tokenizer = spacy.blank("en").tokenizer
    assert json.loads(RULES.read_text())["spacy"].split(".")[:2] == spacy.__version__.split(".")[:2]
    texts = ["We cannot go. Don't!  (U.S.A.) e-mail: a@b.com http://x.org/a?b=1, 3.5% :) 'tis\n\nnext",
             "$\\begingroup$ -Identity L. Jr., 1980's «quoted» ½ ２０２４年 #tag…"]
    texts += [json.loads(line)["text"] for line in text_lines("web/c4_sample.jsonl.gz")][:100]
    for text in texts:
        doc = Doc(text)
        assert doc.words == [t for _, t in tokenizer.explain(text)] == split_words(text)
        assert [w for line in text.splitlines() for w in split_words(line)] == doc.words


def test_letters_alone_are_never_split_so_the_fast_path_is_exact():
    """`SpacyWords` skips the affix rules for chunks of ASCII letters (and the infix rules for digits):
    no rule matches within such a chunk. The rules look at most one character around a match, so all
    strings of up to 3 letters (or digits) cover every window a rule could match in a longer one."""
    import itertools
    import string

    from winnow.stages.lib.spacy_words import load

    tokenizer = load()
    for alphabet in (string.ascii_letters, string.digits):
        for n in (1, 2, 3):
            for chunk in map("".join, itertools.product(alphabet, repeat=n)):
                assert not (tokenizer.prefix(chunk) or tokenizer.suffix(chunk) or any(tokenizer.infix(chunk))), chunk
    # special cases still apply
    assert tokenizer.words("cannot gonna Cannot") == ["can", "not", "gon", "na", "Can", "not"]


def test_shortcuts_split_chunks_as_the_full_algorithm_does():
    """The suffix search that scans only a string's last characters finds what the whole search finds,
    and the fast paths for "word," and "(word" give what the affix loop gives, on real text and on
    strings built to catch them out (runs of dots, units after digits, specials with affixes)."""
    from winnow.stages.lib.spacy_words import load

    tokenizer = load()
    assert tokenizer.suffix.width and tokenizer.suffix.unbounded_ends == ("..",)
    texts = [json.loads(line)["text"] for line in text_lines("web/c4_sample.jsonl.gz")]
    texts += [json.loads(line)["contents"] for line in text_lines("web/toy_pile_data.jsonl.gz")]
    chunks = {chunk for text in texts for chunk in text.split()}
    chunks |= {"....", "a..", "..", ".", "a...b..", "x.", "1km.", "5km/h", "°C.", "10US$", "it's", "a……", "(U.S.A.)",
               "e.g.,", "Dr.", "etc...", "'s", "’S.", "cannot,", "(gonna", "A.", "AB.", "(a", "a)", "Mr.,", "'tis"}
    # spaCy's URL pattern, whose two host forms (an IPv4 address, dotted domain labels) each need a ".":
    # `_split` tries it only on strings holding one
    url = tokenizer.url.__self__.pattern
    assert url.count("(?:\\.(?:") == 2 and "[A-Za-z0-9\\u00a1-\\uffff]\\.)+" in url
    assert not [c for c in chunks if "." not in c and tokenizer.url(c)]
    for chunk in chunks:
        fast, whole = tokenizer.suffix(chunk), tokenizer.suffix.pattern.search(chunk)
        assert (fast and fast.span()) == (whole and whole.span()), chunk
        assert tokenizer._chunk(chunk) == tokenizer._match_specials(tokenizer._split(chunk, specials=True)), chunk


def test_bounded_memo_keeps_memory_bounded_and_frequent_keys_computed_once():
    from winnow.stages.lib.spacy_words import BoundedMemo

    computed = []
    memo = BoundedMemo(lambda key: computed.append(key) or key * 2, limit=4)
    for key in ["hot", 1, "hot", 2, 3, "hot", 4, 5, 6, "hot", 7, 8, "hot"]:
        assert memo[key] == key * 2
        assert len(memo) + len(memo.previous) <= 8
    assert computed.count("hot") == 1 and computed.count(1) == 1


def test_repeated_ngram_chars_follow_datatroves_scan():
    """datatrove's `find_all_duplicate`, written out: scan left to right; a seen n-gram adds its
    characters and jumps past itself."""
    from winnow.stages.heuristics import Doc, _repeated_ngram_chars

    def reference(words, n):
        seen, repeated, i = set(), 0, 0
        while i < len(words) - n + 1:
            gram = "".join(words[i:i + n])
            if gram in seen:
                repeated += len(gram)
                i += n
            else:
                seen.add(gram)
                i += 1
        return repeated

    rng = random.Random(0)
    for _ in range(300):
        words = [rng.choice(["a", "bb", "ccc", "dd", "e"]) for _ in range(rng.randint(0, 40))]
        doc = Doc(" ".join(words))
        for n in range(1, 7):
            assert _repeated_ngram_chars(doc, n) == reference(doc.words, n)
    assert _repeated_ngram_chars(Doc("a b a b a b"), 2) == 4  # a b | a b (skips) | a b: two repeats of "ab"
