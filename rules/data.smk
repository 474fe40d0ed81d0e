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
        # Where the data are is no rerun trigger: the command (it holds the
        # root) is a function of `output`, a "derived" param, which Snakemake
        # leaves out of its params trigger. So a root moved with its files (mv,
        # cp -a) reruns nothing.
        command=prepare_data_command,  # unseen.specs.PrepareData
        # What the data are: the dataset options and the fingerprint (relative
        # names, sizes and mtimes of the source files; every image of an
        # ImageFolder). A change reruns this rule (Snakemake's params trigger)
        # and so every job after it.
        options=as_json({**config["dataset"], "root": None}),
        fingerprint=DATASET_FINGERPRINT,
    shell:
        "{params.command} > {log:q} 2>&1"


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
        settings=job_settings(split_settings),  # the params trigger (common.smk: job_settings)
        command=split_command,  # unseen.specs.Split
    shell:
        "{params.command} > {log:q} 2>&1"
