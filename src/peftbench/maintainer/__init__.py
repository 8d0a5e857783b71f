"""What a maintainer runs, beside what a user runs: the contribution rules as checks (`lint`, behind
`peftbench lint`) and the project's experiment catalogue (`catalogue`, behind `peftbench catalogue`)."""
