"""The answer window's open search reads its common words from a shipped list, not the 27 MB language model.

Reading pocketsphinx's trigram model at start-up cost the daemon about 60 MB of peak memory and a
second; the shipped list must give exactly the words (and probabilities) that reading it would.
"""

from __future__ import annotations

import numpy as np

from voxkeep import SAMPLE_RATE, commands


def test_shipped_list_is_the_ranking_of_the_installed_model() -> None:
    model = commands._model_dir()
    shipped = commands._shipped_common_words(model, commands.COMMON_WORDS_SHIPPED)
    assert shipped is not None, ("data/common_words.tsv was made from another pocketsphinx model; regenerate: "
                                 "python -c 'from voxkeep.commands import write_common_words; write_common_words()'")
    assert shipped == commands.rank_common_words(model, commands.COMMON_WORDS_SHIPPED)
    # Any shorter count is a prefix of the same ranking, as the answer window's 1000 is.
    assert commands._shipped_common_words(model, 1000) == shipped[:1000]


def test_a_list_from_another_model_is_not_used(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "common_words.tsv"
    stale.write_text("# 0000\nzebra\t-1\n", encoding="utf-8")
    monkeypatch.setattr(commands, "COMMON_WORDS_PATH", stale)
    model = commands._model_dir()
    assert commands._shipped_common_words(model, 1) is None
    assert list(commands._common_words(model, 1)) == [commands.rank_common_words(model, 1)[0][0]]


def test_answer_recognizer_starts_without_reading_the_language_model(monkeypatch) -> None:
    """Reading the 27 MB model raised the daemon's peak memory by ~48 MB (bench/run.py); it is not read at all."""
    import pocketsphinx

    from voxkeep.config import CommandSettings

    class Refuse:
        @staticmethod
        def readfile(*_: object) -> None:
            raise AssertionError("the trigram language model was read")

    monkeypatch.setattr(pocketsphinx, "NGramModel", Refuse)
    answers = commands.AnswerRecognizer(CommandSettings())
    assert answers.recognize(np.zeros(SAMPLE_RATE, np.int16)) is None  # a working recogniser, silence is no answer
