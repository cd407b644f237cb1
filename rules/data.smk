rule prepare_data:
    output:
        manifest="results/data/{corpus}/manifest.csv",
        rejected="results/data/{corpus}/rejected.csv",
    log:
        "results/logs/prepare_data/{corpus}.log",
    params:
        corpus=lambda wildcards: json.dumps(config["corpus"], sort_keys=True),
        sample_rate=config["model"]["sample_rate"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/streamvc.yaml"
    shell:
        "streamvc-rvq prepare-data --corpus-json {params.corpus:q} "
        "--sample-rate {params.sample_rate} --output-dir results/data/{wildcards.corpus} "
        "--threads {threads} > {log} 2>&1"
