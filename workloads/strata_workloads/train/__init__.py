"""The trainer that runs inside TrainingJob pods.

Entry point
-----------
::

    torchrun --nproc_per_node=N [--nnodes ... --rdzv-endpoint ...] \\
        -m strata_workloads.train --config /etc/strata/train.yaml

(``deepspeed --num_gpus N -m strata_workloads.train ...`` works too.) Without ``--config``
the file named by ``$STRATA_TRAIN_CONFIG`` is read. The file is YAML or JSON with the
camelCase sections of :mod:`strata_workloads.train.config`: ``model`` (family
transformer|vae|gan|diffusion, size, numClasses), ``deepspeed`` (zeroStage 0..3, precision
fp32|bf16|fp16, microBatchSize, gradientAccumulation, offload none|cpu, gradientClipping),
``hyperparameters``, ``checkpoints``, ``validation`` (earlyStopping), ``data`` (path;
``packing`` joins text documents into full windows, ``documentAttention`` keeps attention
within each), ``performance`` (``fusedOptimizer`` auto|on|off, ``attention`` auto|flash|math,
``activationCheckpointing``, ``compile``), ``export``, ``tracking`` (mlflowUri),
``observability`` (metricsPort).

Devices: each process trains on ``cuda:$LOCAL_RANK`` where GPUs are visible (NCCL), else on
the CPU (gloo); batches, noise, validation, the step's all-reduces and sample generation all
run there, and export traces on the CPU.

Invalid configuration fails before DeepSpeed starts, exit code 2, with one line per bad
setting naming it by dotted path, e.g. ``deepspeed.zeroStage: must be 0..3, got 4``.

Progress contract (what the operator may rely on)
-------------------------------------------------
1. **JSON lines on stdout**, one object per line, each with ``event``, ``time`` (unix
   seconds), ``rank``. Rank 0 emits all events; every rank emits ``process`` and ``failed``.
   Libraries (DeepSpeed, torch) also write to stdout/stderr: consumers take only lines that
   parse as a JSON object with an ``event`` key.

   ``process``     ``pid``, ``worldSize`` (every rank, at start)
   ``started``     ``step`` (0 or the resumed step), ``totalSteps``, ``family``, ``parameters``,
                   ``worldSize``, ``zeroStage``, ``precision``, ``dataset``
   ``resumed``     ``step``, ``tag``, ``path``, ``configChanged``
   ``step``        ``step``, ``totalSteps``, ``losses`` {name: value, averaged over ranks},
                   ``learningRate``, ``samplesPerSecond``, ``tokensPerSecond`` (whole group, real
                   tokens: padding is not counted), ``epoch``; on GPUs ``peakMemoryBytes`` (rank 0's
                   peak allocated GPU memory so far)
   ``validation``  ``step``, ``metrics`` {loss, perplexity (text), ...}
   ``checkpoint``  ``step``, ``tag``, ``path``
   ``early_stopped`` ``step``, ``metric``, ``best``, ``patience``
   ``interrupted`` ``step``, ``signal``, ``checkpoint`` (SIGTERM: checkpointed, then exit 143)
   ``exported``    ``repository``, ``modelName``, ``version``, ``models`` (version directories),
                   ``variants`` (model names by variant), ``quantization``
   ``samples``     generated text (transformer) or image count/shape
   ``tracking_failed`` ``action``, ``error``, ``disabled`` (MLflow failures never stop training;
                   tracking is switched off after a failed start or 3 failures in a row)
   ``completed``   the final result (below)
   ``failed``      ``error``, ``reason`` (InvalidConfiguration | TrainingError)

2. **Prometheus metrics** on ``observability.metricsPort`` (default 9400; rank 0 only):
   ``strata_train_step``, ``strata_train_total_steps``, ``strata_train_loss{name}``,
   ``strata_train_validation_metric{name}``, ``strata_train_samples_per_second``,
   ``strata_train_tokens_per_second``, ``strata_train_learning_rate``,
   ``strata_train_checkpoint_step``; all labelled ``family``.

3. **Termination message** (rank 0) at ``observability.terminationLog``, else
   ``$STRATA_TERMINATION_LOG``, else ``/dev/termination-log``: one compact JSON object of at
   most 4096 bytes: ``status`` (succeeded | early-stopped | interrupted | failed), ``step``, ``metrics``
   (last validation), ``checkpoint`` (directory), ``export`` (repository, model name,
   version, model directories, quantization change), ``resumedFrom``, ``dataset``,
   ``configHash``; on failure ``reason`` and ``error``.

Exit codes: 0 success (including early stop), 1 training failure, 2 invalid configuration,
143 stopped by SIGTERM after checkpointing (a restart resumes from that checkpoint).

Resume: with ``checkpoints.dir`` set, a start finds ``<dir>/latest.json`` and continues from
that step with the same weights, optimizer, LR schedule, data position and early-stopping
state, so a restarted group's loss curve continues the original one.
"""
