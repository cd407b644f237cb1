rule train:
    input:
        manifest=manifest(),
        labels=frame_labels(),
        previous=previous_checkpoint,
    output:
        checkpoint=CHECKPOINT,
        scalars=SCALARS,
    log:
        f"{RESULTS}/{{experiment}}/logs/train_step_{{step}}.log",
    params:
        config=config_for("train"),
        labels=labels_flag,
        resume=resume_flag,
        tensorboard=TENSORBOARD,
    threads: 1
    priority: depth_first
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=1,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq train --config-json {params.config:q} --manifest {input.manifest} {params.labels} "
        "--step {wildcards.step} {params.resume} --tensorboard {params.tensorboard} "
        "--threads {threads} --output {output.checkpoint} --scalars-output {output.scalars} "
        # from the top-level config, not params: a new snapshot cadence re-runs nothing
        "--snapshot-every-steps {config[snapshots][every_steps]} "
        "--snapshot-every-minutes {config[snapshots][every_minutes]} > {log} 2>&1"
