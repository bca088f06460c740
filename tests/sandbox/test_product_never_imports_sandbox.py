"""The simulators are development and test tools: no product module may import `sandbox`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_PRODUCT = {"sandbox", "tests"}


def product_packages(root: Path) -> list[Path]:
    return sorted(
        path.parent
        for path in root.glob("*/__init__.py")
        if path.parent.name not in NOT_PRODUCT and not path.parent.name.startswith(".")
    )


def sandbox_imports(source: str) -> list[str]:
    """Every `import sandbox...`, `from sandbox... import` and `import_module("sandbox...")`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_sandbox(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_sandbox(node.module or ""):
            found.append(node.module or "")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _is_sandbox(node.args[0].value)
        ):
            found.append(node.args[0].value)
    return found


def _is_sandbox(module: str) -> bool:
    return module == "sandbox" or module.startswith("sandbox.")


def violations(root: Path) -> list[str]:
    return [
        f"{path.relative_to(root)} imports {module}"
        for package in product_packages(root)
        for path in sorted(package.rglob("*.py"))
        for module in sandbox_imports(path.read_text(encoding="utf-8"))
    ]


def test_no_product_module_imports_sandbox() -> None:
    packages = {package.name for package in product_packages(ROOT)}

    assert {"billing", "pharmacy", "config", "common", "events", "patients", "prescriptions"} <= packages
    assert violations(ROOT) == []


def test_the_check_finds_every_way_of_importing_sandbox(tmp_path: Path) -> None:
    package = tmp_path / "billing"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "uses.py").write_text(
        "import sandbox.gateway\n"
        "from sandbox import stripe\n"
        "from sandboxed import thing\n"
        "from . import sandbox\n"
        "import importlib\n"
        "importlib.import_module('sandbox.server')\n"
    )
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "__init__.py").write_text("import sandbox.server\n")

    assert violations(tmp_path) == [
        "billing/uses.py imports sandbox.gateway",
        "billing/uses.py imports sandbox",
        "billing/uses.py imports sandbox.server",
    ]
