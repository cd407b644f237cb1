# Comparisons across experiments: the Phase 2 remedy ladder and the table of every experiment.


rule experiments_table:
    input:
        unpack(table_inputs),
    output:
        csv=report(f"{COMPARE}/experiments.csv", caption="report/experiments.rst", category=REPORT_CATEGORIES["experiments"]),
        markdown=f"{COMPARE}/experiments.md",
    log:
        f"{RESULTS}/logs/compare/experiments.log",
    params:
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.csv)),  # {results}/compare/..
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq experiments --results {params.results} --sort class "
        "--csv {output.csv} --markdown {output.markdown} > {log} 2>&1"


rule remedy_ladder:
    input:
        unpack(ladder_inputs),
    output:
        ladder=f"{COMPARE}/remedies.json",
        phase2=f"{COMPARE}/phase2.yaml",
        report=report(f"{COMPARE}/remedies.md", caption="report/ladder.rst", category=REPORT_CATEGORIES["ladder"]),
        plots=report(
            directory(f"{COMPARE}/remedies_plots"),
            patterns=["{name}.png"],
            caption="report/ladder.rst",
            category=REPORT_CATEGORIES["ladder"],
        ),
    log:
        f"{RESULTS}/logs/compare/remedies.log",
    params:
        flags=ladder_flags,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq ladder {params.flags} --verdicts {input.verdicts} --metrics {input.metrics} "
        "--reference-levels {input.reference} --experiments-table {input.table} --output {output.ladder} "
        "--report {output.report} --plots-dir {output.plots} --phase2 {output.phase2} > {log} 2>&1"
