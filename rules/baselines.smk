# Baselines in the same DAG: fitting (score with a model trained on all data)
# and random (a uniform subset of the same size). The full baseline is a retrain.


rule train_fitting_model:
    input:
        data=rules.prepare_data.output,
        folds=rules.split_folds.output,
    output:
        checkpoint=f"{RESULTS}/seed{{seed}}/fitting/model.pt",
        predictions=f"{RESULTS}/seed{{seed}}/fitting/predictions.npz",
    log:
        "logs/seed{seed}/train_fitting_model.log",
    conda:
        CONDA_ENV_FILE
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        gpu=TRAIN["gpu"],
    params:
        model=model_json("scoring_model"),
        train=train_json("scoring_model"),
        record=as_json(config["record_epochs"]),
        record_format=config["record_format"],
        device=config["device"],
    shell:
        "python -m unseen train-fitting --dataset-cache {input.data:q} --folds-table {input.folds:q}"
        " --model {params.model:q} --train {params.train:q} --record-epochs {params.record:q}"
        " --record-format {params.record_format}"
        " --seed {wildcards.seed} --device {params.device} --threads {threads}"
        " --checkpoint {output.checkpoint:q} --predictions {output.predictions:q} > {log:q} 2>&1"


rule score_fitting:
    input:
        predictions=rules.train_fitting_model.output.predictions,
        checkpoint=rules.train_fitting_model.output.checkpoint,
        data=rules.prepare_data.output,
    output:
        f"{RESULTS}/seed{{seed}}/scores/fitting/{{scorer}}.parquet",
    log:
        "logs/seed{seed}/score_fitting/{scorer}.log",
    conda:
        CONDA_ENV_FILE
    threads: score_resource("threads")
    resources:
        mem_mb=score_resource("mem_mb"),
        runtime=score_resource("runtime"),
        gpu=score_resource("gpu"),
    params:
        options=scorer_options,
        device=config["device"],
    shell:
        "python -m unseen score --predictions {input.predictions:q} --checkpoint {input.checkpoint:q}"
        " --dataset-cache {input.data:q} --scorer {wildcards.scorer} --options {params.options:q}"
        " --device {params.device} --allow-seen --seed {wildcards.seed} --output {output:q}"
        " > {log:q} 2>&1"


rule select_fitting_coreset:
    input:
        unpack(difficulty_input),
        unpack(choice_input("fitting")),
        scores=rules.score_fitting.output,
    output:
        parquet=f"{RESULTS}/seed{{seed}}/coresets/fitting-{{scorer}}-{{strategy}}/rate{{rate}}/coreset.parquet",
        ids=f"{RESULTS}/seed{{seed}}/coresets/fitting-{{scorer}}-{{strategy}}/rate{{rate}}/coreset.txt",
    log:
        "logs/seed{seed}/select_fitting_coreset/{scorer}-{strategy}_rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    params:
        selection=selection_json,
        difficulty=difficulty_flag,
        choice=choice_flag,
    shell:
        "python -m unseen select-top --scores {input.scores:q} --rate {wildcards.rate}"
        " --selection {params.selection:q} {params.difficulty} {params.choice} --seed {wildcards.seed}"
        " --output {output.parquet:q} --id-list {output.ids:q} > {log:q} 2>&1"


rule select_random_coreset:
    input:
        rules.split_folds.output,
    output:
        parquet=f"{RESULTS}/seed{{seed}}/coresets/random/rate{{rate}}/coreset.parquet",
        ids=f"{RESULTS}/seed{{seed}}/coresets/random/rate{{rate}}/coreset.txt",
    log:
        "logs/seed{seed}/select_random_coreset/rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    shell:
        "python -m unseen select-random --folds-table {input:q} --rate {wildcards.rate}"
        " --seed {wildcards.seed} --output {output.parquet:q} --id-list {output.ids:q}"
        " > {log:q} 2>&1"
