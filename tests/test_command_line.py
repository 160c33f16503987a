"""The command line and the console, as a newcomer uses them (real subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, db: Path, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DISCORD_TOKEN": "", "QUOTEBOT_CORPUS_DIR": str(REPO / "corpus"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args, "--db", str(db)] if args else [sys.executable, "-m", "bot", "--db", str(db)],
        input=stdin, capture_output=True, text=True, cwd=REPO, env=full_env, timeout=120,
    )


def test_ask_json_prints_exactly_one_object_with_the_quote(tmp_path):
    result = run("ask", "Who released the footage?", "--json", db=tmp_path / "db.sqlite3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["answered"] is True and data["question"] == "Who released the footage?"
    assert any("Kim Sung-Eun" in p["text"] for p in data["passages"])
    assert data["passages"][0]["source"] == "Agence France-Presse"


def test_ask_batch_from_stdin_answers_one_line_per_question(tmp_path):
    questions = "Who released the footage?\nWhere was the footage shot?\nWho won the World Cup in 2018?\n"
    result = run("ask", "--batch", "-", "--json", "--top", "1", db=tmp_path / "db.sqlite3", stdin=questions)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [a["answered"] for a in answers] == [True, True, False]
    assert all(len(a["passages"]) <= 1 for a in answers)
    assert "Rajin" in answers[1]["passages"][0]["text"]


def test_import_reports_bad_files_by_name_and_carries_on(tmp_path):
    folder = tmp_path / "articles"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.txt").write_text("Harbour reopens\n\nThe harbour reopened on Wednesday after the storm, officials said.\n")
    (folder / "sub" / "also.md").write_text("---\ntitle: Mill fire\nsource: Gazette\n---\nThe old mill burned down on Sunday night.\n")
    (folder / "empty.txt").write_text("")
    (folder / "blob.html").write_bytes(b"\x00\x01\x02\x03" * 100)
    (folder / "bulk.jsonl").write_text(
        json.dumps({"title": "Bus route", "text": "Route 9 now runs every ten minutes on weekdays."}) + "\n{oops\n"
    )
    db = tmp_path / "db.sqlite3"
    result = run("import", str(folder), db=db)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "added 3, duplicates 0, failed 3"
    assert "empty.txt" in result.stderr and "blob.html" in result.stderr and "bulk.jsonl:2" in result.stderr

    listing = json.loads(run("list", "--json", db=db).stdout)
    assert {a["title"] for a in listing} == {
        "Rare N. Korea video shows karaoke salons, markets", "Harbour reopens", "Mill fire", "Bus route",
    }
    again = run("import", str(folder / "good.txt"), "--scope", "777", db=db)
    assert again.stdout.strip() == "added 1, duplicates 0, failed 0"
    scoped = json.loads(run("list", "--json", "--scope", "777", db=db).stdout)
    assert [(a["title"], a["scope"]) for a in scoped] == [("Harbour reopens", "777")]


def test_export_then_import_into_an_empty_database_reproduces_every_article(tmp_path):
    db = tmp_path / "db.sqlite3"
    (tmp_path / "x.txt").write_text("Ferry strike\n\nThe ferry crews walked out on Friday over pay.\n")
    assert run("import", str(tmp_path / "x.txt"), "--scope", "99", db=db).returncode == 0
    export = tmp_path / "library.jsonl"
    assert run("export", str(export), db=db).returncode == 0
    fresh = tmp_path / "fresh.sqlite3"
    env = {"QUOTEBOT_CORPUS_DIR": str(tmp_path / "no-corpus")}
    assert run("import", str(export), db=fresh, env=env).returncode == 0
    again = tmp_path / "again.jsonl"
    assert run("export", str(again), db=fresh, env=env).returncode == 0

    def strip(path: Path) -> list[dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "id"} for r in rows]

    # Who added each article and when survive the round trip (the corpus says "corpus").
    assert strip(again) == strip(export) and len(strip(export)) == 2
    assert {r["added_by"] for r in strip(again)} == {"corpus", "cli"}


def test_the_console_answers_questions_and_admin_commands(tmp_path):
    extra = tmp_path / "note.md"
    extra.write_text("---\ntitle: Library hours\n---\nThe town library now opens at nine on Saturdays.\n")
    script = (
        "who released the footage?\n"
        f"!article add {extra}\n"
        "When does the library open on Saturdays?\n"
        "!article list\n"
        "!article show 1\n"
        "!article remove 2\n"
        "When does the library open on Saturdays?\n"
        "!help\n"
        "!quit\n"
        "this line is never read\n"
    )
    result = run(db=tmp_path / "db.sqlite3", stdin=script)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "Kim Sung-Eun" in out and "Agence France-Presse" in out
    assert "Stored article 2: Library hours" in out
    assert "opens at nine on Saturdays" in out
    assert "[1] Rare N. Korea video shows karaoke salons, markets" in out
    assert "Removed article 2: Library hours" in out
    assert out.count("No stored article answers that.") == 1
    assert "!article add PATH|URL" in out


def test_a_broken_database_file_is_a_clear_error_not_a_traceback(tmp_path):
    db = tmp_path / "db.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    result = run("list", db=db)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


# --- clear one-line errors ----------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr


def damage(db: Path) -> None:
    """Overwrite the start of every third page past the first few (a bad disk, a bad copy)."""
    size = db.stat().st_size
    with db.open("r+b") as handle:
        for page in range(5, size // 4096, 3):
            handle.seek(page * 4096)
            handle.write(b"\xff" * 64)
    db.with_name(db.name + ".index").unlink(missing_ok=True)


def test_a_damaged_database_is_one_clear_line_for_every_command(tmp_path):
    db = tmp_path / "db.sqlite3"
    wire = tmp_path / "wire.jsonl"
    wire.write_text("".join(
        json.dumps({"title": f"Report {i}", "text": f"The committee {i} approved a footbridge. " * 20}) + "\n"
        for i in range(300)
    ))
    assert run("import", str(wire), db=db).returncode == 0
    damage(db)
    for args in (("ask", "What did committee 5 approve?"), ("list",), ("export", str(tmp_path / "out.jsonl"))):
        one_line_error(run(*args, db=db), "error: ", "database disk image is malformed")
    console = run(db=db, stdin="What did committee 5 approve?\n")
    assert "Traceback" not in console.stderr and "malformed" in console.stderr


def test_a_database_path_under_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    one_line_error(run("list", db=tmp_path / "notes.txt" / "db.sqlite3"), "error: ", "a file is in the way")


@pytest.mark.parametrize(
    "args, message",
    [
        (("ask", "Who released the footage?", "--scope", "99999999999999999999999"), "at most 19 digits"),
        (("list", "--scope", "9223372036854775808"), "at most 19 digits"),
        (("ask", "Who released the footage?", "--top", "-1"), "between 1 and 50"),
        (("ask", "Who released the footage?", "--top", "0"), "between 1 and 50"),
    ],
)
def test_out_of_range_numbers_on_the_command_line_are_usage_errors(tmp_path, args, message):
    one_line_error(run(*args, db=tmp_path / "db.sqlite3"), message)


def test_an_article_id_past_64_bits_is_no_such_article_in_the_console(tmp_path):
    result = run(db=tmp_path / "db.sqlite3", stdin="!article show 99999999999999999999\n!article remove 99999999999999999999\n")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stdout.count("No article 99999999999999999999 here.") == 2


def make_read_only(path: Path) -> None:
    """Read-only for this process: by permission, or (as root, whom permissions do not stop)
    by the immutable attribute."""
    path.chmod(0o555 if path.is_dir() else 0o444)
    if os.access(path, os.W_OK):
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    assert not os.access(path, os.W_OK)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_library_still_answers_and_refuses_changes_plainly(tmp_path, what):
    folder = tmp_path / "library"
    folder.mkdir()
    db = folder / "db.sqlite3"
    assert run("list", db=db).returncode == 0  # created, with the shipped corpus
    (tmp_path / "note.txt").write_text("Ferry strike\n\nThe ferry crews walked out on Friday over pay.\n")
    before = db.read_bytes()
    target = db if what == "file" else folder
    make_read_only(target)
    try:
        answer = run("ask", "Who released the footage?", "--json", db=db)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["answered"] is True
        assert "read-only" in answer.stderr and "Traceback" not in answer.stderr
        console = run(db=db, stdin="Who released the footage?\n!ask who released the footage?\n")
        assert console.stdout.count("Kim Sung-Eun") >= 2 and "Traceback" not in console.stderr
        refused = run("import", str(tmp_path / "note.txt"), db=db)
        one_line_error(refused, "error: The library database is read-only; nothing was changed.")
        assert db.read_bytes() == before
    finally:
        make_writable(target)
