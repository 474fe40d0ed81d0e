# The `validated` strategy's choice: per seed, score table and rate, one model
# per candidate strategy trained on the training set minus a held-out split and
# compared on that split (unseen.validation). Selections read the choice.


rule choose_strategy:
    input:
        data=rules.prepare_data.output,
        scores=f"{RESULTS}/seed{{seed}}/scores/{{score_kind}}/{{scorer}}.parquet",
    output:
        f"{RESULTS}/seed{{seed}}/strategy_choice/{{score_kind}}-{{scorer}}/rate{{rate}}.json",
    log:
        "logs/seed{seed}/choose_strategy/{score_kind}-{scorer}_rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: TRAIN["threads"]
    resources:
        **TRAIN_RESOURCES,
    params:
        settings=job_settings(choice_settings),  # the params trigger (common.smk: job_settings)
        command=choose_strategy_command,  # unseen.specs.ChooseStrategy
    shell:
        "{params.command} > {log:q} 2>&1"
