rule evaluate:
    input:
        manifest=manifest(),
        labels=frame_labels(),
        checkpoint=CHECKPOINT,
        scalars=checkpoint_scalars,
    output:
        metrics=f"{RESULTS}/{{experiment}}/metrics/step_{{step}}.json",
        # played through the verdict's samples pages (the report offers a wav only as a download)
        samples=directory(f"{RESULTS}/{{experiment}}/samples/step_{{step}}"),
    log:
        f"{RESULTS}/{{experiment}}/logs/evaluate_step_{{step}}.log",
    params:
        config=config_for("evaluate"),
        labels=labels_flag,
        measures=quality_measures_flag,
    threads: 1
    priority: depth_first
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq evaluate --config-json {params.config:q} --manifest {input.manifest} {params.labels} "
        "--checkpoint {input.checkpoint} --scalars {input.scalars} {params.measures} "
        "--samples-dir {output.samples} --output {output.metrics} --threads {threads} > {log} 2>&1"
