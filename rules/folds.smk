# Out-of-fold scoring: K fold models, one score shard per (fold, scorer), one aggregate per scorer.


rule train_fold_model:
    input:
        data=rules.prepare_data.output,
        folds=rules.split_folds.output,
    output:
        checkpoint=f"{RESULTS}/seed{{seed}}/folds/fold{{fold}}/model.pt",
        predictions=f"{RESULTS}/seed{{seed}}/folds/fold{{fold}}/predictions.npz",
    log:
        "logs/seed{seed}/train_fold_model/fold{fold}.log",
    conda:
        CONDA_ENV_FILE
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        gpu=TRAIN["gpu"],
    params:
        # what the model trains on (the fitting and stage models override this),
        trained_on=lambda wc: f"--fold {wc.fold} --fold-mode {config['folds']['mode']}",
        # and for how long: the fitting model's steps times budget.scoring
        budget=f"--scoring-budget {config['budget']['scoring']}",
        model=model_json("scoring_model"),
        train=train_json("scoring_model"),
        record=as_json(config["record_epochs"]),
        record_format=config["record_format"],
        device=config["device"],
    shell:
        "python -m unseen train-scoring-model {params.trained_on} {params.budget}"
        " --dataset-cache {input.data:q} --folds-table {input.folds:q}"
        " --model {params.model:q} --train {params.train:q} --record-epochs {params.record:q}"
        " --record-format {params.record_format} --seed {wildcards.seed}"
        " --device {params.device} --threads {threads}"
        " --checkpoint {output.checkpoint:q} --predictions {output.predictions:q} > {log:q} 2>&1"


rule score_fold:
    input:
        predictions=rules.train_fold_model.output.predictions,
        checkpoint=rules.train_fold_model.output.checkpoint,
        data=rules.prepare_data.output,
    output:
        f"{RESULTS}/seed{{seed}}/scores/oof/fold{{fold}}/{{scorer}}.parquet",
    log:
        "logs/seed{seed}/score_fold/fold{fold}_{scorer}.log",
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
        seen="",  # "--allow-seen" only for the fitting baseline (rules/baselines.smk)
    shell:
        "python -m unseen score --predictions {input.predictions:q} --checkpoint {input.checkpoint:q}"
        " --dataset-cache {input.data:q} --scorer {wildcards.scorer} --options {params.options:q}"
        " --device {params.device} {params.seen} --seed {wildcards.seed} --output {output:q} > {log:q} 2>&1"


rule aggregate_scores:
    input:
        expand(
            f"{RESULTS}/seed{{{{seed}}}}/scores/oof/fold{{fold}}/{{{{scorer}}}}.parquet",
            fold=FOLDS,
        ),
    output:
        f"{RESULTS}/seed{{seed}}/scores/oof/{{scorer}}.parquet",
    log:
        "logs/seed{seed}/aggregate_scores/{scorer}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    shell:
        "python -m unseen aggregate --output {output:q} {input:q} > {log:q} 2>&1"


rule class_difficulty:
    input:
        expand(
            f"{RESULTS}/seed{{{{seed}}}}/folds/fold{{fold}}/predictions.npz",
            fold=FOLDS,
        ),
    output:
        f"{RESULTS}/seed{{seed}}/class_difficulty.parquet",
    log:
        "logs/seed{seed}/class_difficulty.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    shell:
        "python -m unseen class-difficulty --output {output:q} {input:q} > {log:q} 2>&1"
