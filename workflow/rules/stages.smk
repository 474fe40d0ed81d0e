# UNSEEN incremental selection. Stage 1 takes the top M1 by aggregated
# out-of-fold score; each later stage trains a model on S_t, scores the samples
# not yet selected, and adds the top ones. Every stage is its own set of jobs.


rule select_first_stage:
    input:
        f"{RESULTS}/seed{{seed}}/scores/oof/{{scorer}}.parquet",
    output:
        f"{STAGE_DIR}/stage1.parquet",
    log:
        "logs/seed{seed}/select_stage/unseen-{scorer}_rate{rate}_stage1.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    params:
        stages=as_json(config["stages"]),
        keep=config["selection"]["keep"],
    shell:
        "python -m unseen select-first-stage --scores {input:q} --rate {wildcards.rate}"
        " --stages {params.stages:q} --keep {params.keep} --output {output:q} > {log:q} 2>&1"


rule train_stage_model:
    input:
        data=rules.prepare_data.output,
        folds=rules.split_folds.output,
        coreset=f"{STAGE_DIR}/stage{{stage}}.parquet",
    output:
        checkpoint=f"{STAGE_DIR}/stage{{stage}}/model.pt",
        predictions=f"{STAGE_DIR}/stage{{stage}}/predictions.npz",
    log:
        "logs/seed{seed}/train_stage_model/unseen-{scorer}_rate{rate}_stage{stage}.log",
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
        device=config["device"],
        name=lambda wc: f"stage{wc.stage}-unseen-{wc.scorer}-rate{wc.rate}",
    shell:
        "python -m unseen train-stage --dataset-cache {input.data:q} --folds-table {input.folds:q}"
        " --coreset {input.coreset:q} --model-name {params.name} --model {params.model:q}"
        " --train {params.train:q} --record-epochs {params.record:q} --seed {wildcards.seed}"
        " --device {params.device} --threads {threads}"
        " --checkpoint {output.checkpoint:q} --predictions {output.predictions:q} > {log:q} 2>&1"


rule score_stage:
    input:
        f"{STAGE_DIR}/stage{{stage}}/predictions.npz",
    output:
        f"{STAGE_DIR}/stage{{stage}}/scores.parquet",
    log:
        "logs/seed{seed}/score_stage/unseen-{scorer}_rate{rate}_stage{stage}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    shell:
        "python -m unseen score --predictions {input:q} --scorer {wildcards.scorer}"
        " --seed {wildcards.seed} --output {output:q} > {log:q} 2>&1"


rule select_next_stage:
    input:
        unpack(previous_stage),
        folds=rules.split_folds.output,
    output:
        f"{STAGE_DIR}/stage{{stage,[2-9]|[1-9][0-9]+}}.parquet",
    log:
        "logs/seed{seed}/select_stage/unseen-{scorer}_rate{rate}_stage{stage}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    params:
        stages=as_json(config["stages"]),
        keep=config["selection"]["keep"],
    shell:
        "python -m unseen select-next-stage --previous {input.previous:q} --stage-scores {input.scores:q}"
        " --folds-table {input.folds:q} --stage {wildcards.stage} --rate {wildcards.rate}"
        " --stages {params.stages:q} --keep {params.keep} --output {output:q} > {log:q} 2>&1"


rule finalize_unseen_coreset:
    input:
        f"{STAGE_DIR}/stage{N_STAGES}.parquet",
    output:
        parquet=f"{STAGE_DIR}/coreset.parquet",
        ids=f"{STAGE_DIR}/coreset.txt",
    log:
        "logs/seed{seed}/finalize/unseen-{scorer}_rate{rate}.log",
    conda:
        CONDA_ENV_FILE
    threads: LIGHT["threads"]
    resources:
        mem_mb=LIGHT["mem_mb"],
        runtime=LIGHT["runtime"],
    shell:
        "python -m unseen finalize --stage-table {input:q} --output {output.parquet:q}"
        " --id-list {output.ids:q} > {log:q} 2>&1"
