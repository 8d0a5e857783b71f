"""Sub-command modules of the `peftbench` CLI (see peftbench.cli)."""
