"""`vlmaudit train-head`: labelled images -> frozen vision features -> safety head on disk."""

from __future__ import annotations


import numpy as np

from vlmaudit.commands.options import TrainHeadRequest
from vlmaudit.errors import UserError

MIN_EXAMPLES = 2  # one to learn from and one to hold out


def run_train_head(request: TrainHeadRequest) -> dict:
    from rich.console import Console

    from vlmaudit.head import training as T
    from vlmaudit.head.data import load_examples
    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.head.model import save_head
    from vlmaudit.backends.vision import VisionTower
    from vlmaudit.storage.localfiles import check_writable_dir

    settings = request.training()
    check_writable_dir(request.out)  # like every check here, before the vision tower loads
    console = Console(stderr=True, quiet=request.quiet)
    rules = load_rules(request.rules)
    taxonomy = rules.taxonomy
    examples = load_examples(request.data, taxonomy, request.safe_images)
    if len(examples) < MIN_EXAMPLES:
        raise UserError(f"--data {request.data}: {len(examples)} labelled image(s) in all; "
                        f"train-head needs at least {MIN_EXAMPLES}")
    console.print(f"{len(examples)} labelled images ({sum(e.concept == -1 for e in examples)} safe)")
    tower = VisionTower(ModelOptions(request.vision_model, request.device, "fp32", request.allow_unsafe_weights,
                                     request.trust_remote_code, flag="--vision-model"))
    cache = request.cache_dir or request.out / "feature-cache"
    features = T.extract_features(tower, examples, cache, settings.extract_batch, console.print)
    concepts = np.array([e.concept for e in examples])
    categories = np.array([e.category for e in examples])
    head, train_idx, val_idx = T.train(features, concepts, categories, len(taxonomy.concepts),
                                       len(taxonomy.categories), settings, tower.device, console.print)
    metrics = _validation_metrics(head, features, concepts, categories, val_idx, taxonomy, tower.device)
    metrics["train_samples"] = int(len(train_idx))
    config = _head_config(tower, taxonomy, settings, features.shape, metrics)
    seen = set(concepts[concepts >= 0].tolist())
    config["trained_concepts"] = [c for i, c in enumerate(taxonomy.concept_ids) if i in seen]  # what it scores
    save_head(head, request.out, config)
    from vlmaudit.storage.localfiles import write_text_atomic

    write_text_atomic(request.out / "metrics.json", __import__("json").dumps(metrics, indent=2))
    _print_metrics(console, metrics)
    console.print(f"head written to {request.out} (use: vlmaudit scan ... --backend head --head {request.out})")
    return metrics


def _validation_metrics(head, features, concepts, categories, val_idx, taxonomy, device) -> dict:
    from vlmaudit.head import training as T

    n_c, n_k = len(taxonomy.concepts), len(taxonomy.categories)
    truth_concept = np.where(concepts[val_idx] == -1, n_c, concepts[val_idx])
    truth_category = np.where(categories[val_idx] == -1, n_k, categories[val_idx])
    pred_concept, pred_category = T.predict(head, features[val_idx], device) if len(val_idx) else (np.array([]),) * 2
    return T.evaluate(truth_concept, truth_category, pred_concept, pred_category, taxonomy.category_ids)


def _head_config(tower, taxonomy, settings, shape, metrics) -> dict:
    from vlmaudit.head.training import settings_dict

    return {
        "vision_model": tower.options.model, "vision_revision": tower.revision, "vision_dim": int(shape[2]),
        "patches": int(shape[1]), "dim": settings.dim, "tokens": settings.tokens, "heads": settings.heads,
        "concepts": taxonomy.concept_ids, "categories": taxonomy.category_ids,
        "taxonomy_version": taxonomy.tag, "taxonomy_fingerprint": taxonomy.fingerprint(),
        "training": settings_dict(settings),
        "validation": {k: metrics[k] for k in ("samples", "concept_accuracy", "category_accuracy")},
    }


def _print_metrics(console, metrics: dict) -> None:
    from rich.table import Table

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=f"validation: {metrics['samples']} images, category accuracy {fmt(metrics['category_accuracy'])}, "
                        f"concept accuracy {fmt(metrics['concept_accuracy'])}")
    for column in ("category", "precision", "recall", "support"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, row in metrics["per_category"].items():
        table.add_row(name, fmt(row["precision"]), fmt(row["recall"]), str(row["support"]))
    console.print(table)
