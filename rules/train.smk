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
        # an execution setting, as threads are: a new snapshot cadence re-runs nothing (params would)
        snapshot_every_steps=config["snapshots"]["every_steps"],
        snapshot_every_minutes=str(config["snapshots"]["every_minutes"]),
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq train --config-json {params.config:q} --manifest {input.manifest} {params.labels} "
        "--step {wildcards.step} {params.resume} --tensorboard {params.tensorboard} "
        "--threads {threads} --output {output.checkpoint} --scalars-output {output.scalars} "
        "--snapshot-every-steps {resources.snapshot_every_steps} "
        "--snapshot-every-minutes {resources.snapshot_every_minutes} > {log} 2>&1"
