# Targets this config does not build get one line naming what it does build, instead of
# Snakemake's generic "No rule to produce". The catch-all rules below match only paths the
# real rules do not build (their `path` wildcard excludes every experiment of this config),
# so they can never stand in for a real target; asking for one stops the plan with the line.

wildcard_constraints:
    # not one of this config's experiment directories followed by the target's own one or two
    # path components (a lookahead sees the rest of the whole path, not just the wildcard)
    path=r"(?!(?:%s)/[^/]+(?:/[^/]+)?$).+" % "|".join(re.escape(own) for own in _OWN),


rule unknown_verdict:
    input:
        _target_check("verdict.json"),
    output:
        "results/{path}/verdict.json",
    log:
        "results/logs/unknown_target/{path}/verdict.log",
    conda:
        "../envs/streamvc.yaml"
    shell:
        "false"


rule unknown_checkpoint:
    input:
        _target_check("checkpoints/step_{step}.pt"),
    output:
        "results/{path}/checkpoints/step_{step}.pt",
    log:
        "results/logs/unknown_target/{path}/checkpoint_{step}.log",
    conda:
        "../envs/streamvc.yaml"
    shell:
        "false"


rule unknown_metrics:
    input:
        _target_check("metrics/step_{step}.json"),
    output:
        "results/{path}/metrics/step_{step}.json",
    log:
        "results/logs/unknown_target/{path}/metrics_{step}.log",
    conda:
        "../envs/streamvc.yaml"
    shell:
        "false"


ruleorder: verdict > unknown_verdict
ruleorder: train > unknown_checkpoint
ruleorder: evaluate > unknown_metrics
