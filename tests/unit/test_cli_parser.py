"""The command line parser: a command on backup files gets a parser of its own (start-up)."""

from __future__ import annotations

import pytest

from nas_receiver.cli import ON_FILES, _command_word, build_parser

SAMPLES = {
    "inspect": ["inspect", "b.tar", "--json"],
    "verify": ["--config", "c.yaml", "verify", "a.tar", "b.tar", "--level", "quick"],
    "decrypt": ["decrypt", "a.tar", "-o", "out.tar", "--key-file", "k"],
    "encrypt": ["encrypt", "a.tar", "-o", "out.tar", "--securetar-version", "2"],
    "extract": ["extract", "a.tar", "-o", "dir", "--member", "homeassistant", "--force"],
}


@pytest.mark.parametrize("command", sorted(ON_FILES))
def test_a_command_on_files_parses_as_with_the_whole_parser(command: str) -> None:
    argv = SAMPLES[command]
    assert _command_word(argv) == command
    assert build_parser(command).parse_args(argv) == build_parser().parse_args(argv)


def test_help_and_other_commands_get_the_whole_parser(capsys: pytest.CaptureFixture[str]) -> None:
    assert _command_word(["verify", "--help"]) is None
    assert _command_word(["--config", "verify", "status"]) == "status"
    assert _command_word(["--config=c.yaml", "verify", "a.tar"]) == "verify"
    # argparse takes abbreviations: "--conf verify inspect" is inspect with config "verify",
    # "--he verify" is help; anything before the command but --config gets the whole parser.
    for argv in (["--conf", "verify", "inspect"], ["--he", "verify"], ["--", "verify"]):
        assert _command_word(argv) is None
    with pytest.raises(SystemExit):
        build_parser(_command_word(["--help"])).parse_args(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in [*ON_FILES, "run", "status", "mirror", "dsm"])


def test_only_a_standard_output_whose_reader_is_gone_counts_as_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken pipe is quiet only when it is standard output's (``list | head``): with a
    reader still there, or stdout a file, it is another pipe's and the command reports it.
    Once gone, stdout writes into /dev/null, so Python's flush at exit has nothing to say."""
    import os

    from nas_receiver.cli import _stdout_gone

    read_end, write_end = os.pipe()
    with open(write_end, "w") as stdout, open(read_end, "rb") as reader:
        monkeypatch.setattr("sys.stdout", stdout)
        assert not _stdout_gone()  # the reader is there
        reader.close()
        assert _stdout_gone()
        stdout.write("x" * 200_000)
        stdout.flush()  # into /dev/null now: no BrokenPipeError
    with open(os.devnull, "w") as stdout:
        monkeypatch.setattr("sys.stdout", stdout)
        assert not _stdout_gone()
    monkeypatch.setattr("sys.stdout", None)  # started with ">&-"
    assert not _stdout_gone()
