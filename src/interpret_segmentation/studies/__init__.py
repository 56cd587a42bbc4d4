"""Studies built from the methods: the demo, evaluations, parameter sweeps, reliability and
the reproductions of the seed papers."""
