"""Measurement scripts behind BENCHMARKS.md, one question each (what INT8's parts cost, how steady
the host is, what the range guard costs, where tiling seams come from, ...), each printing the
table BENCHMARKS.md quotes together with the machine it ran on. They are not part of the installed
`elan_deploy` package and not a test suite: they build on the library (never on
`elan_deploy.commands`) and may import one another as `experiments.NAME`. Run one from the
repository root: `python -m experiments.NAME --help` lists its options, `python -m
experiments.NAME [OPTIONS]` runs it; the datasets some of them read are expected under
`../shared/data`, beside the repository.
"""
