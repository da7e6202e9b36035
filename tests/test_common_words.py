"""The answer window's open search reads its common words from a shipped list, not the 27 MB language model.

Reading pocketsphinx's trigram model at start-up cost the daemon about 60 MB of peak memory and a
second; the shipped list must give exactly the words (and probabilities) that reading it would.
"""

from __future__ import annotations

import subprocess
import sys

from voxkeep import commands


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


def test_answer_recognizer_starts_without_reading_the_language_model() -> None:
    """Peak memory of a process that builds the answer recogniser stays far below the model's size."""
    code = ("import resource; from voxkeep.config import CommandSettings; from voxkeep.commands import "
            "AnswerRecognizer; import pocketsphinx; b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "AnswerRecognizer(CommandSettings()); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - b)")
    grown_kb = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown_kb < 27_000, f"building the answer recogniser raised peak memory by {grown_kb} kB"
