# Baselines in the same DAG: fitting (score with a model trained on all data)
# and random (a uniform subset of the same size). The full baseline is a retrain.


use rule train_fold_model as train_fitting_model with:
    output:
        checkpoint=f"{RESULTS}/seed{{seed}}/fitting/model.pt",
        predictions=f"{RESULTS}/seed{{seed}}/fitting/predictions.npz",
    log:
        "logs/seed{seed}/train_fitting_model.log",
    params:
        settings=job_settings(fitting_model_settings),
        command=scoring_model_command(fitting_model_settings),  # all samples; the budgets' reference


use rule score_fold as score_fitting with:
    input:
        predictions=rules.train_fitting_model.output.predictions,
        checkpoint=rules.train_fitting_model.output.checkpoint,
        data=rules.prepare_data.output,
    output:
        f"{RESULTS}/seed{{seed}}/scores/fitting/{{scorer}}.parquet",
    log:
        "logs/seed{seed}/score_fitting/{scorer}.log",
    params:
        settings=job_settings(fitting_score_settings),
        command=score_command(fitting_score_settings),  # its own training samples, by design


rule select_fitting_coreset:
    input:
        unpack(side_inputs(naming.FITTING)),
        scores=rules.score_fitting.output,
    output:
        parquet=f"{RESULTS}/seed{{seed}}/coresets/{FITTING_CORESET}/rate{{rate}}/coreset.parquet",
        ids=f"{RESULTS}/seed{{seed}}/coresets/{FITTING_CORESET}/rate{{rate}}/coreset.txt",
    log:
        "logs/seed{seed}/select_fitting_coreset/{scorer}-{strategy}_rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        settings=job_settings(selection_settings),  # the params trigger (common.smk: job_settings)
        command=select_single_step_command,  # unseen.specs.SelectSingleStep
    shell:
        "{params.command} > {log:q} 2>&1"


rule select_random_coreset:
    input:
        rules.split_folds.output,
    output:
        parquet=f"{RESULTS}/seed{{seed}}/coresets/{CoresetId(naming.RANDOM)}/rate{{rate}}/coreset.parquet",
        ids=f"{RESULTS}/seed{{seed}}/coresets/{CoresetId(naming.RANDOM)}/rate{{rate}}/coreset.txt",
    log:
        "logs/seed{seed}/select_random_coreset/rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        settings=job_settings(select_random_settings),
        command=select_random_command,  # unseen.specs.SelectRandom
    shell:
        "{params.command} > {log:q} 2>&1"
