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
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        gpu=TRAIN["gpu"],
    params:
        model=model_json("final_model"),
        train=train_json("final_model"),
        device=config["device"],
        coreset_labels=coreset_labels,
    shell:
        "python -m unseen retrain --dataset-cache {input.data:q} --coreset {input.coreset:q}"
        " {params.coreset_labels} --rate {wildcards.rate} --scoring-predictions {input.scoring:q}"
        " --retrain-budget {wildcards.retrain_budget}"
        " --model {params.model:q} --train {params.train:q} --seed {wildcards.seed}"
        " --device {params.device} --threads {threads}"
        " --metrics-json {output.json:q} --metrics-parquet {output.parquet:q} > {log:q} 2>&1"


rule retrain_full:
    input:
        data=rules.prepare_data.output,
    output:
        json=f"{RESULTS}/seed{{seed}}/retrain/full/metrics.json",
        parquet=f"{RESULTS}/seed{{seed}}/retrain/full/metrics.parquet",
    log:
        "logs/seed{seed}/retrain/full.log",
    conda:
        CONDA_ENV_FILE
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        gpu=TRAIN["gpu"],
    params:
        model=model_json("final_model"),
        train=train_json("final_model"),
        device=config["device"],
    shell:
        "python -m unseen retrain --dataset-cache {input.data:q} --method full --scorer none --strategy none"
        " --model {params.model:q} --train {params.train:q} --seed {wildcards.seed}"
        " --device {params.device} --threads {threads}"
        " --metrics-json {output.json:q} --metrics-parquet {output.parquet:q} > {log:q} 2>&1"


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
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    shell:
        "python -m unseen summarize --output {output.parquet:q} --csv {output.csv:q} {input:q}"
        " > {log:q} 2>&1"
