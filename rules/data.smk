rule prepare_data:
    output:
        f"{RESULTS}/data/dataset.npz",
    log:
        "logs/prepare_data.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    params:
        dataset=as_json(config["dataset"]),
        # Names, sizes and mtimes of the source files: a changed source reruns this
        # rule (Snakemake's params rerun trigger) and so every job after it.
        fingerprint=dataset_fingerprint(config["dataset"]),
    shell:
        "python -m unseen prepare-data --dataset {params.dataset:q} --output {output:q} > {log:q} 2>&1"


rule split_folds:
    input:
        rules.prepare_data.output,
    output:
        f"{RESULTS}/seed{{seed}}/split/folds.parquet",
    log:
        "logs/seed{seed}/split_folds.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    params:
        k=config["folds"]["k"],
    shell:
        "python -m unseen split --dataset-cache {input:q} --folds {params.k} --seed {wildcards.seed}"
        " --output {output:q} > {log:q} 2>&1"
