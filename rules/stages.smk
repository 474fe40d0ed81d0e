# UNSEEN incremental selection. Stage 1 takes the top M1 by aggregated
# out-of-fold score; each later stage trains a model on S_t, scores the samples
# not yet selected, and adds the top ones. Every stage is its own set of jobs.


rule select_first_stage:
    input:
        unpack(side_inputs(naming.UNSEEN)),
        scores=f"{RESULTS}/seed{{seed}}/scores/oof/{{scorer}}.parquet",
    output:
        f"{STAGE_DIR}/stage1.parquet",
    log:
        f"logs/seed{{seed}}/select_stage/{UNSEEN_CORESET}_rate{{rate}}_stage1.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        settings=job_settings(selection_settings),  # the params trigger (common.smk: job_settings)
        command=select_first_stage_command,  # unseen.specs.SelectFirstStage
    shell:
        "{params.command} > {log:q} 2>&1"


use rule train_fold_model as train_stage_model with:
    input:
        data=rules.prepare_data.output,
        folds=rules.split_folds.output,
        coreset=f"{STAGE_DIR}/stage{{stage}}.parquet",
    output:
        checkpoint=f"{STAGE_DIR}/stage{{stage}}/model.pt",
        predictions=f"{STAGE_DIR}/stage{{stage}}/predictions.npz",
    log:
        f"logs/seed{{seed}}/train_stage_model/{UNSEEN_CORESET}_rate{{rate}}_stage{{stage}}.log",
    params:
        settings=job_settings(stage_model_settings),
        command=scoring_model_command(stage_model_settings),  # trains on S_t, records the rest


use rule score_fold as score_stage with:
    input:
        predictions=rules.train_stage_model.output.predictions,
        checkpoint=rules.train_stage_model.output.checkpoint,
        data=rules.prepare_data.output,
    output:
        f"{STAGE_DIR}/stage{{stage}}/scores.parquet",
    log:
        f"logs/seed{{seed}}/score_stage/{UNSEEN_CORESET}_rate{{rate}}_stage{{stage}}.log",


rule select_next_stage:
    input:
        unpack(previous_stage),
        unpack(side_inputs(naming.UNSEEN)),
        folds=rules.split_folds.output,
    output:
        f"{STAGE_DIR}/stage{{stage,[2-9]|[1-9][0-9]+}}.parquet",
    log:
        f"logs/seed{{seed}}/select_stage/{UNSEEN_CORESET}_rate{{rate}}_stage{{stage}}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        settings=job_settings(selection_settings),
        command=select_next_stage_command,  # unseen.specs.SelectNextStage
    shell:
        "{params.command} > {log:q} 2>&1"


rule finalize_unseen_coreset:
    input:
        lambda wc: f"{STAGE_DIR}/stage{len(stage_fractions(wc))}.parquet".format(**wc),
    output:
        parquet=f"{STAGE_DIR}/coreset.parquet",
        ids=f"{STAGE_DIR}/coreset.txt",
    log:
        f"logs/seed{{seed}}/finalize/{UNSEEN_CORESET}_rate{{rate}}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        command=finalize_command,  # unseen.specs.Finalize; only paths, so no settings
    shell:
        "{params.command} > {log:q} 2>&1"
