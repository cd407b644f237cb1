rule evaluate:
    input:
        manifest=manifest(),
        checkpoint="results/{experiment}/checkpoints/step_{step}.pt",
    output:
        metrics="results/{experiment}/metrics/step_{step}.json",
        samples=report(
            directory("results/{experiment}/samples/step_{step}"),
            patterns=["{name}.wav"],
            caption="report/samples.rst",
            category="Samples",
            subcategory="{experiment} step {step}",
        ),
    log:
        "results/{experiment}/logs/evaluate_step_{step}.log",
    params:
        config=experiment_json,
        tensorboard=lambda wildcards: f"results/{wildcards.experiment}/tensorboard",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq evaluate --config-json {params.config:q} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} --tensorboard {params.tensorboard} "
        "--samples-dir {output.samples} --output {output.metrics} --threads {threads} > {log} 2>&1"
