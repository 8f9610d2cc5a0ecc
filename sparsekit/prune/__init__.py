"""Pruning: masked linears, binarizers, schedules, recipes and the training loop."""
from sparsekit.prune.config import PruneConfig
from sparsekit.prune.output import PrunedModel, load_pruned
from sparsekit.prune.pruner import MASKINGS, Pruner
from sparsekit.prune.recipes import RECIPES, Recipe, get_recipe
from sparsekit.prune.train import PruneResult, prune

__all__ = ["MASKINGS", "PruneConfig", "PruneResult", "PrunedModel", "Pruner", "RECIPES", "Recipe", "get_recipe",
           "load_pruned", "prune"]
