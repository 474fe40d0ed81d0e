rule prepare_data:
    output:
        f"{RESULTS}/data/dataset.npz",
    log:
        "logs/prepare_data.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        # Where the data are is no rerun trigger: a function of `input` is a
        # "derived" param, which Snakemake leaves out of its params trigger. So
        # a root moved with its files (mv, cp -a) reruns nothing.
        dataset=lambda wildcards, input: as_json(config["dataset"]),
        # What the data are: the dataset options and the fingerprint (relative
        # names, sizes and mtimes of the source files; every image of an
        # ImageFolder). A change reruns this rule (Snakemake's params trigger)
        # and so every job after it.
        options=as_json({**config["dataset"], "root": None}),
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
        **LIGHT_RESOURCES,
    params:
        k=config["folds"]["k"],
    shell:
        "python -m unseen split --dataset-cache {input:q} --folds {params.k} --seed {wildcards.seed}"
        " --output {output:q} > {log:q} 2>&1"
