# The run's report: an overview at the top, the regime, mean and std over seeds per
# method, what `validated` chose, score diagnostics and five figures, all registered
# for `snakemake --report` (results/README.md lists the files).


rule scoring_models:
    input:
        [path for _, path in all_scoring_models()],
    output:
        f"{RESULTS}/scoring_models.parquet",
    log:
        "logs/scoring_models.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        # the seeds are the models' run seeds, named by their paths (the input): no settings
        command=scoring_models_command,  # unseen.specs.ScoringModels
    shell:
        "{params.command} > {log:q} 2>&1"


rule report:
    input:
        unpack(score_table_inputs),
        summary=rules.summarize.output.parquet,
        scoring_models=rules.scoring_models.output,
        choices=all_strategy_choices(),
        classes=all_metrics()[0].replace(".parquet", ".json"),
    output:
        overview=report(
            f"{REPORT_DIR}/overview.html",
            category="0. Overview",
            caption="../workflow/report/overview.rst",
        ),
        summary=report(
            f"{REPORT_DIR}/summary.csv", category="1. Accuracy", caption="../workflow/report/summary.rst"
        ),
        summary_parquet=f"{REPORT_DIR}/summary.parquet",
        diagnostics=report(
            f"{REPORT_DIR}/diagnostics.csv",
            category="2. Score diagnostics",
            caption="../workflow/report/diagnostics.rst",
        ),
        diagnostics_parquet=f"{REPORT_DIR}/diagnostics.parquet",
        regime=report(
            f"{REPORT_DIR}/regime.html",
            category="0. Regime",
            caption="../workflow/report/regime.rst",
        ),
        scoring_models=report(
            f"{REPORT_DIR}/scoring_models.csv",
            category="0. Regime",
            caption="../workflow/report/scoring_models.rst",
        ),
        scoring_models_parquet=f"{REPORT_DIR}/scoring_models.parquet",
        accuracy=report(
            f"{REPORT_DIR}/accuracy_vs_rate.png",
            category="1. Accuracy",
            caption="../workflow/report/accuracy_vs_rate.rst",
        ),
        cost_quality=report(
            f"{REPORT_DIR}/cost_quality.png",
            category="1. Accuracy",
            caption="../workflow/report/cost_quality.rst",
        ),
        choices_note=report(
            f"{REPORT_DIR}/strategy_choices_note.html",
            category="1. Accuracy",
            caption="../workflow/report/strategy_choices_note.rst",
        ),
        choices=report(
            f"{REPORT_DIR}/strategy_choices.csv",
            category="1. Accuracy",
            caption="../workflow/report/strategy_choices.rst",
        ),
        choices_parquet=f"{REPORT_DIR}/strategy_choices.parquet",
        histograms=report(
            f"{REPORT_DIR}/score_histograms.png",
            category="2. Score diagnostics",
            caption="../workflow/report/score_histograms.rst",
        ),
        ranks=report(
            f"{REPORT_DIR}/rank_stability.png",
            category="2. Score diagnostics",
            caption="../workflow/report/rank_stability.rst",
        ),
        per_class=report(
            f"{REPORT_DIR}/per_class_accuracy.png",
            category="3. Per-class accuracy",
            caption="../workflow/report/per_class_accuracy.rst",
        ),
    log:
        "logs/report.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        **LIGHT_RESOURCES,
    params:
        settings=job_settings(report_settings),  # the params trigger (common.smk: job_settings)
        command=report_command,  # unseen.specs.Report
    shell:
        "{params.command} > {log:q} 2>&1"
