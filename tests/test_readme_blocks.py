"""The generated blocks of the READMEs match what the project's commands print from the committed results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_blocks", REPO / "scripts" / "readme_blocks.py")
readme_blocks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_blocks)

DOCS = sorted(
    p
    for p in [REPO / "README.md", *REPO.glob("benchmarks/*/README.md")]
    if "<!-- generated:" in p.read_text()
)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_generated_blocks_are_up_to_date(path):
    assert readme_blocks.main(["--check", str(path)]) == 0, (
        f"run: python scripts/readme_blocks.py {path.relative_to(REPO)}"
    )


def test_a_stale_block_is_found_and_rewritten(tmp_path, capsys):
    doc = tmp_path / "README.md"
    doc.write_text(
        "intro\n<!-- generated: peftbench --version -->\nold text\n<!-- end generated -->\nafter\n"
    )
    assert readme_blocks.main(["--check", str(doc)]) == 1
    assert "old text" in doc.read_text()  # --check writes nothing
    assert readme_blocks.main([str(doc)]) == 0
    text = doc.read_text()
    assert (
        "old text" not in text and "peftbench " in text and text.endswith("<!-- end generated -->\nafter\n")
    )
    assert readme_blocks.main(["--check", str(doc)]) == 0


def test_only_peftbench_commands_may_generate(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- generated: rm -rf / -->\n<!-- end generated -->\n")
    with pytest.raises(ValueError, match="only peftbench commands"):
        readme_blocks.main([str(doc)])
