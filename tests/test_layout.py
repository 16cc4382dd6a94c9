"""The package's form holds: modules and functions a reader can hold in their head, docs that match the code.

The layers and the absence of import cycles are import-linter contracts (pyproject.toml); `make test` runs them
(`lint-imports`) and builds the docs site strictly (`mkdocs build --strict`) before the suite.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rewardlab"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules by job (at most {MAX_MODULE_LINES} lines): {long}"


def test_no_function_is_over_80_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert not long, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {long}"


def test_the_configuration_reference_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_option_says_what_it_does():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import config_reference
    finally:
        sys.path.pop(0)
    missing = [f"{title}: {name}" for title, _, cls, prefix in config_reference.sections()
               for name, _, help_text in config_reference.options(cls, prefix) if not help_text.strip()]
    assert not missing, f"options without help metadata: {missing}"


def test_option_help_quotes_no_benchmark_or_issue():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import config_reference
    finally:
        sys.path.pop(0)
    for title, _, cls, prefix in config_reference.sections():
        for name, _, help_text in config_reference.options(cls, prefix):
            for word in ("README", "bench/", "HH-RLHF", "#1", "#2", "#3", "#4", "measured"):
                assert word not in help_text, f"{name}'s help mentions {word!r}: say what the option does instead"


def test_readme_stays_short_and_has_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme
