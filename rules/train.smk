rule train:
    input:
        manifest=manifest(),
        previous=previous_checkpoint,
    output:
        checkpoint="results/{experiment}/checkpoints/step_{step}.pt",
    log:
        "results/{experiment}/logs/train_step_{step}.log",
    params:
        config=experiment_json,
        resume=resume_flag,
        tensorboard=lambda wildcards: f"results/{wildcards.experiment}/tensorboard",
        device=config["train"]["device"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=1,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq train --config-json {params.config:q} --manifest {input.manifest} "
        "--step {wildcards.step} {params.resume} --tensorboard {params.tensorboard} "
        "--device {params.device} --threads {threads} --output {output.checkpoint} > {log} 2>&1"
