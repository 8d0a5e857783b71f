"""Gradio dashboard and static HTML report: thin layers over peftbench.analysis."""
