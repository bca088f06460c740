"""mypy checks all product code strictly; a `# type: ignore` is an exception that has to say
which error it silences and why, and there are few of them. Product code is every Python file
outside tests/ and migrations."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOST_IGNORES = 30
SKIPPED_DIRECTORIES = frozenset({"tests", "migrations", "var", "node_modules", "__pycache__"})
IGNORE = re.compile(r"#\s*type:\s*ignore\b")
# `# type: ignore[error-code, ...]  # the reason`
WELL_FORMED = re.compile(r"#\s*type:\s*ignore\[[a-z][a-z-]*(?:,\s*[a-z][a-z-]*)*\]\s+#\s*\S")


def product_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.py")
        if not any(
            part in SKIPPED_DIRECTORIES or part.startswith(".") for part in path.relative_to(ROOT).parts[:-1]
        )
    )


def ignores_in(source: str) -> list[tuple[int, str]]:
    """(line, comment) of every `type: ignore` comment; strings that merely mention one do not count."""
    return [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and IGNORE.search(token.string)
    ]


def product_ignores() -> list[tuple[str, int, str]]:
    return [
        (str(path.relative_to(ROOT)), line, comment)
        for path in product_files()
        for line, comment in ignores_in(path.read_text(encoding="utf-8"))
    ]


def test_the_scan_covers_product_code_and_skips_tests_and_migrations() -> None:
    scanned = {str(path.relative_to(ROOT)) for path in product_files()}

    assert "prescriptions/services.py" in scanned
    assert "scripts/bench.py" in scanned
    assert not any(name.startswith("tests/") or "/migrations/" in name for name in scanned)


def test_it_tells_a_well_formed_ignore_from_a_bare_one() -> None:
    source = (
        "a = 1  # type: ignore\n"
        "b = 2  # type: ignore[attr-defined]\n"
        "c = 3  # type: ignore[attr-defined]  # read by the serializer\n"
        'd = "# type: ignore"\n'
    )

    found = ignores_in(source)

    assert [line for line, _ in found] == [1, 2, 3]
    assert [bool(WELL_FORMED.search(comment)) for _, comment in found] == [False, False, True]


def test_product_code_has_at_most_thirty_type_ignores() -> None:
    ignores = product_ignores()

    assert len(ignores) <= MOST_IGNORES, "\n".join(f"{name}:{line}" for name, line, _ in ignores)


def test_every_type_ignore_names_its_error_code_and_a_reason() -> None:
    bare = [
        f"{name}:{line}: {comment}"
        for name, line, comment in product_ignores()
        if not WELL_FORMED.search(comment)
    ]

    assert bare == []
