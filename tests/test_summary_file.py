"""lepton_nb.summary_file: an unreadable summary.json is named, moved aside, and never costs a run."""

from __future__ import annotations

import json
import warnings

import pytest

import lepton_nb as ln
from lepton_nb import summary_file
from lepton_nb.summary_file import SummaryError, SummaryWarning

GOOD = {"modes": {"smoke": {"sections": {"01_x": {"models": {"m": {"accuracy": 90.0}}}},
                            "runs": {"01_x": {"recorded": "2026-12-02T10:00:00+00:00", "command": "make run"}}}}}
#: Damaged files as they happen: cut off mid-write, bytes of another encoding, another program's JSON.
BROKEN = {
    "truncated": (b'{"broken": ', "is not valid JSON (Expecting value: line 1 column 12"),
    "empty": (b"", "is empty"),
    "not utf-8": (b'{"modes": "\xff\xfe"}', "is not UTF-8 text (byte 0xff at offset 11)"),
    "a list": (b"[1, 2]", "is not a lepton_nb summary (the top level is a list, not an object)"),
    "modes a list": (b'{"modes": []}', "is not a lepton_nb summary (modes is a list, not an object)"),
    "section a number": (b'{"modes": {"smoke": {"sections": {"01_x": 3}}}}',
                         "is not a lepton_nb summary (modes['smoke']['sections']['01_x'] is int, not an object)"),
    "flat, sections a list": (b'{"sections": []}', "is not a lepton_nb summary (sections is a list, not an object)"),
}


@pytest.fixture()
def smoke(monkeypatch):
    monkeypatch.setenv("LEPTON_NB_SMOKE", "1")
    monkeypatch.delenv("LEPTON_NB_FULL", raising=False)


@pytest.mark.parametrize("content, problem", BROKEN.values(), ids=BROKEN.keys())
def test_record_moves_an_unreadable_summary_aside_and_records(tmp_path, smoke, content, problem):
    path = tmp_path / "summary.json"
    path.write_bytes(content)
    assert summary_file.problem(path).startswith(problem)
    with pytest.raises(SummaryError, match="move it aside") as strict:
        ln.reports.load_summary(path)  # the strict reader names the file, the problem and the fix
    assert str(strict.value).startswith(f"{path} {problem}")
    with pytest.warns(SummaryWarning, match="moved it aside to") as caught:
        ln.reports.record("02_y", {"ran": True}, path=path)
    aside = list(tmp_path.glob("summary.json.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content  # kept byte for byte
    assert str(caught[0].message).startswith(f"{path} {problem}") and str(aside[0]) in str(caught[0].message)
    assert caught[0].filename == __file__  # the warning points at the caller's line, not into lepton_nb
    assert json.loads(path.read_text())["modes"]["smoke"]["sections"] == {"02_y": {"ran": True}}


@pytest.mark.parametrize("content", [json.dumps(GOOD), json.dumps({"sections": {"01_x": {"m": 1}},
                                                                   "modes": {"01_x": "smoke"}})],
                         ids=["per mode", "flat"])
def test_a_readable_summary_is_left_alone(tmp_path, smoke, content):
    path = tmp_path / "summary.json"
    path.write_text(content)
    assert summary_file.problem(path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # control: no SummaryWarning
        ln.reports.record("02_y", {"ran": True}, path=path)
    assert not list(tmp_path.glob("summary.json.unreadable-*"))
    assert set(ln.reports.load_summary(path)["modes"]["smoke"]["sections"]) == {"01_x", "02_y"}


def test_set_aside_never_overwrites(tmp_path):
    path = tmp_path / "summary.json"
    targets = []
    for i in range(3):  # three in the same second
        path.write_text(f"damaged {i}")
        targets.append(summary_file.set_aside(path))
    assert len(set(targets)) == 3 and [t.read_text() for t in targets] == ["damaged 0", "damaged 1", "damaged 2"]
    assert not path.exists()


def test_the_main_job_check_reports_without_a_python_warning(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"broken": ')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary, message = summary_file.read_or_set_aside(path, warn=False)
    assert summary is None and message.startswith(f"{path} is not valid JSON")
    assert summary_file.read_or_set_aside(path) == (None, None)  # nothing left to move


def test_a_failed_write_leaves_the_old_summary_whole(tmp_path, smoke):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(GOOD))
    with pytest.raises(TypeError):
        ln.reports.record("02_y", {"unserializable": object()}, path=path)
    assert json.loads(path.read_text()) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_results_refuses_an_unreadable_summary_with_the_fix(tmp_path, capsys):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "summary.json").write_text('{"broken": ')
    assert ln.cli.main(["results", "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    assert f"error: {reports / 'summary.json'} is not valid JSON" in err and "move it aside" in err
    assert (reports / "summary.json").read_text() == '{"broken": '  # a read-only command moves nothing
