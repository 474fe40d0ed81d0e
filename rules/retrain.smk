# Final retrain: a fresh model trained from scratch on each coreset (and on all
# data for the full baseline), evaluated on the test split; then one summary table.


rule retrain:
    input:
        data=rules.prepare_data.output,
        coreset=f"{RESULTS}/seed{{seed}}/coresets/{{coreset}}/rate{{rate}}/coreset.parquet",
        scoring=scoring_predictions,
    output:
        json=f"{RESULTS}/seed{{seed}}/retrain/{{retrain_budget}}/{{coreset}}/rate{{rate}}/metrics.json",
        parquet=f"{RESULTS}/seed{{seed}}/retrain/{{retrain_budget}}/{{coreset}}/rate{{rate}}/metrics.parquet",
    log:
        "logs/seed{seed}/retrain/{retrain_budget}/{coreset}_rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: TRAIN["threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        settings=job_settings(retrain_settings),  # the params trigger (common.smk: job_settings)
        command=retrain_command,  # unseen.specs.Retrain; the full baseline overrides both
    shell:
        "{params.command} > {log:q} 2>&1"


use rule retrain as retrain_full with:
    input:
        data=rules.prepare_data.output,
    output:
        json=f"{RESULTS}/seed{{seed}}/retrain/full/metrics.json",
        parquet=f"{RESULTS}/seed{{seed}}/retrain/full/metrics.parquet",
    log:
        "logs/seed{seed}/retrain/full.log",
    params:
        settings=job_settings(retrain_full_settings),
        command=retrain_full_command,  # all training data


rule summarize:
    input:
        all_metrics(),
    output:
        parquet=f"{RESULTS}/summary.parquet",
        csv=f"{RESULTS}/summary.csv",
    log:
        "logs/summarize.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        command=summarize_command,  # unseen.specs.Summarize; only paths, so no settings
    shell:
        "{params.command} > {log:q} 2>&1"
