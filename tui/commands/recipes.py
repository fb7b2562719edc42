"""`kvant recipes list`: the shipped recipes, each with its one-line description."""


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list the shipped quantization recipes",
                       description="Show the recipes `kvant quantize --recipe NAME` accepts, with their schemes.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="show each recipe with its scheme and description")
    p.set_defaults(func=run)


def run(args) -> int:
    from kvant.quantize.recipe import RECIPES_DIR, load_recipe, shipped_recipe_names

    names = shipped_recipe_names()
    if not names:
        print(f"no recipes found in {RECIPES_DIR}")
        return 0
    width = max(len(n) for n in names)
    for name in names:
        recipe = load_recipe(name)
        description = " ".join(str(recipe.description or "").split())
        print(f"{name:<{width}}  {recipe.scheme:<12}  {description}")
    return 0
