"""Pure decisions from metrics: the protocol's criteria and answers, seed and scale confidence, A/B and ladder comparisons, and the command glue that writes them."""
