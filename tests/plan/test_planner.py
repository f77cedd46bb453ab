"""The planner: what it refuses to plan, naming the model or option its closed form does not model."""

from __future__ import annotations

import pytest


def test_planner_refuses_hybrid_clearly():
    from vitkit.plan.planner import PlanRequest, plan

    with pytest.raises(ValueError, match="HybridVisionTransformer"):
        plan(PlanRequest(model="vit_hybrid_conv_tiny_32"))


@pytest.mark.parametrize("name, overrides", [("vit_tiny_window4_patch4_32", {}), ("vit_tiny_rope_patch4_32", {}),
                                             ("vit_tiny_patch16_224", {"mlp_dwconv": True})])
def test_planner_refuses_options_its_closed_form_does_not_model(name, overrides):
    from vitkit.plan.planner import PlanRequest, plan

    with pytest.raises(ValueError, match="does not model"):
        plan(PlanRequest(model=name, overrides=overrides))
