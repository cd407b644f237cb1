rule verdict:
    input:
        unpack(verdict_inputs),
    output:
        verdict=VERDICT,
        report=f"{RESULTS}/{{experiment}}/report/report.md",
        report_html=report(
            f"{RESULTS}/{{experiment}}/report/verdict.html",
            caption="report/verdict.rst",
            category=REPORT_CATEGORIES["verdict"],
            subcategory="{experiment}",
        ),
        plots=report(
            directory(f"{RESULTS}/{{experiment}}/report/plots"),
            patterns=["{name}.png"],
            caption="report/plots.rst",
            category=REPORT_CATEGORIES["verdict"],
            subcategory="{experiment}",
        ),
        samples_pages=report(
            directory(f"{RESULTS}/{{experiment}}/report/samples"),
            patterns=["step_{page}.html"],
            caption="report/samples_page.rst",
            category=REPORT_CATEGORIES["samples"],
            subcategory="{experiment}",
            labels=samples_page_labels,
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/verdict.log",
    params:
        config=config_for("verdict"),
        comparisons=comparison_flags,
    threads: 1
    priority: depth_first
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq verdict --config-json {params.config:q} --metrics {input.metrics} --reference-levels {input.reference} "
        "{params.comparisons} --scalars {input.scalars} --output {output.verdict} "
        "--report {output.report} --report-html {output.report_html} --plots-dir {output.plots} "
        "--samples-dirs {input.samples} --manifest {input.manifest} --samples-pages {output.samples_pages} > {log} 2>&1"


rule ab_comparison:
    input:
        unpack(ab_inputs),
    output:
        comparison=ab_target(config, "{comparison}"),
        report=report(
            f"{RESULTS}/ab/{{comparison}}.md",
            caption="report/ab.rst",
            category=REPORT_CATEGORIES["ab"],
        ),
        plots=report(
            directory(f"{RESULTS}/ab/{{comparison}}_plots"),
            patterns=["{name}.png"],
            caption="report/ab.rst",
            category=REPORT_CATEGORIES["ab"],
        ),
    log:
        f"{RESULTS}/logs/ab/{{comparison}}.log",
    params:
        arms=lambda wildcards: config["ab"][wildcards.comparison]["arms"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq ab --name {wildcards.comparison} --arms {params.arms} --verdicts {input.verdicts} "
        "--metrics {input.metrics} --output {output.comparison} --report {output.report} "
        "--plots-dir {output.plots} > {log} 2>&1"
