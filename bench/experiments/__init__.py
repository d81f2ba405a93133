"""The papers' claims, tested on simulated robot data (issue 6): E1-E5, several seeds, paired differences.

Data (:mod:`.data`). Short MuJoCo episodes of the simulated arm (press and push a box) are recorded
as rosbag2 with :func:`core.sim.record.record_episode` and replayed through the node's own window
pipeline (:func:`core.data.dataset.iter_windows`), once, into a cache. Frames are downsampled to ``IMAGE``
pixels once so that hundreds of short training runs fit on a 2-core CPU; everything after that is
the library's path (:mod:`.arms`): :class:`core.learn.models.MultimodalModel`, the objectives
built by :func:`core.learn.objectives.build_objective`, :func:`core.learn.train.make_optimizer` and
the one training loop, :meth:`core.learn.train.Trainer.fit`. The last ``test_episodes`` episodes
(1 quick, 2 full) are held out (split by episode, never by window).

Downstream metrics (:mod:`.probe`, on frozen embeddings of the held-out episodes, probes fit on the
training ones): end-effector position error in mm (closed-form ridge regression on the fused
embedding), contact accuracy (:func:`core.eval.metrics.linear_probe_accuracy`, labels from
:func:`core.eval.evaluation.contact_labels`: tactile force or the box moving), cross-modal retrieval R@1
and mAP (:func:`core.eval.evaluation.retrieval`, windows spread evenly in time, since neighbours at 30 Hz
are near-duplicates).

Every arm of an experiment gets the same data, steps, batch size, learning rate and seeds; seed ``s``
draws the same batches and the same initial weights in every arm, so differences are paired.
One module per experiment (:mod:`.e1` ... :mod:`.e5`: the runs, the table, the plot), the
corruptions in :mod:`.corrupt`, the statistics in :mod:`.stats`, the command in :mod:`.main`:

    .venv/bin/python bench/experiments --quick            # reduced: under 15 min on the 2-core VM
    .venv/bin/python bench/experiments                    # the full run
    .venv/bin/python bench/experiments --smoke            # 3 steps, 2 seeds: checks that it runs

Prints a table per experiment, writes ``--out`` (JSON and PNG plots) and ends with one JSON line.
"""
