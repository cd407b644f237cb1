rule prepare_data:
    output:
        manifest=MANIFEST,
        rejected=REJECTED,
    log:
        data_log("prepare_data"),
    params:
        corpus=json.dumps(dict(prepare_config(config["corpus"]), name=config["corpus"]["name"]), sort_keys=True),
        sample_rate=config["model"]["sample_rate"],
        hop_length=hop_length(config["model"]),
        output_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq prepare-data --corpus-json {params.corpus:q} "
        "--sample-rate {params.sample_rate} --hop-length {params.hop_length} --output-dir {params.output_dir} "
        # on failure the error line reaches the terminal, and the log (kept) names what was rejected
        "--threads {threads} > {log} 2>&1 || {{ grep -E '^error:' {log} >&2; echo 'log: {log}' >&2; exit 1; }}; "
        "grep -E '^(split|note):' {log} >&2"


rule frame_labels:
    input:
        manifest=MANIFEST,
    output:
        labels=FRAME_LABELS,
    log:
        data_log("frame_labels"),
    params:
        labels=labels_config(config["corpus"]),
        flags=" ".join(f"--{key.replace('_', '-')} {value}" for key, value in labels_config(config["corpus"]).items()),
        sample_rate=config["model"]["sample_rate"],
        hop_length=hop_length(config["model"]),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq labels --manifest {input.manifest} {params.flags} "
        "--sample-rate {params.sample_rate} --hop-length {params.hop_length} --threads {threads} "
        "--output {output.labels} > {log} 2>&1"


rule reference_levels:
    input:
        manifest=MANIFEST,
    output:
        levels=REFERENCE_LEVELS,
    log:
        data_log("reference_levels"),
    params:
        levels=reference_config(config),
        measures=" ".join(reference_config(config)["measures"]),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq reference-levels --manifest {input.manifest} --measures {params.measures} "
        "--max-utterances {params.levels[max_utterances]} --sample-rate {params.levels[sample_rate]} "
        "--threads {threads} --output {output.levels} > {log} 2>&1"
