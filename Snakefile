# StreamVC-RVQ: the Phase 1 codebook-collapse protocol as a workflow.
# This file is a table of contents; each stage lives in rules/<stage>.smk and each rule runs
# one `streamvc-rvq` subcommand. See README.md and config/README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/verdict.smk"
include: "rules/compare.smk"
include: "rules/targets.smk"


rule all:
    input:
        default_targets(),
    default_target: True


onstart:
    cpu_time_notice(workflow)
