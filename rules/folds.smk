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
        **TRAIN_RESOURCES,
    params:
        # what the model trains on: fold k here; the fitting and stage models override both
        settings=job_settings(fold_model_settings),  # the params trigger (common.smk: job_settings)
        command=scoring_model_command(fold_model_settings),  # unseen.specs.TrainScoringModel
    shell:
        "{params.command} > {log:q} 2>&1"


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
        # the fitting baseline's scores override both (its model scores its own training samples)
        settings=job_settings(score_settings),
        command=score_command(score_settings),  # unseen.specs.Score
    shell:
        "{params.command} > {log:q} 2>&1"


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
        **LIGHT_RESOURCES,
    params:
        command=aggregate_command,  # unseen.specs.Aggregate; only paths, so no settings
    shell:
        "{params.command} > {log:q} 2>&1"


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
        **LIGHT_RESOURCES,
    params:
        command=class_difficulty_command,  # unseen.specs.ClassDifficulty; only paths
    shell:
        "{params.command} > {log:q} 2>&1"
