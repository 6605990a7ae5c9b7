"""Layer groups of the exported graph: every quantizable node in exactly one recognised group."""

from __future__ import annotations

import onnx


def test_layer_groups_cover_every_quantizable_node(exported_onnx) -> None:
    from elan_deploy.calibration.layers import KINDS, layer_groups, quantizable_nodes

    model = onnx.load(str(exported_onnx), load_external_data=False)
    groups = layer_groups(model)
    nodes = [n for g in groups for n in g.nodes]
    assert sorted(nodes) == sorted(quantizable_nodes(model)) and len(set(nodes)) == len(nodes)
    assert {g.kind for g in groups} == set(KINDS)  # every node recognised, no per-node fallback
    assert len(groups) == 2 + 12 * 5  # head, tail, 12 ELABs x (lfe, project_inp, attn_qk, attn_av, project_out)
