"""LowRankBlock's parts agree at construction; wrong inputs and arguments give one clear error."""

import pytest
import torch

from segattn.errors import ArgumentError
from segattn.lowrank import (
    EMMapper,
    GraphConvReasoner,
    LowRankBlock,
    MatrixDecompositionMapper,
    ProjectionMapper,
    ProjectionReverse,
    TransposeReverse,
)


def test_parts_disagreeing_on_the_node_count_fail_at_construction():
    with pytest.raises(ArgumentError, match=r"node count K.*mapper ProjectionMapper has 32.*reverse ProjectionReverse has 16"):
        LowRankBlock(ProjectionMapper(64, 32), None, ProjectionReverse(64, 16))
    with pytest.raises(ArgumentError, match=r"reasoner GraphConvReasoner has 8"):
        LowRankBlock(EMMapper(64, 16), GraphConvReasoner(8, 64), TransposeReverse())


def test_wrong_channel_count_names_the_input_and_the_part():
    block = LowRankBlock(ProjectionMapper(64, 8), GraphConvReasoner(8, 64), ProjectionReverse(64, 8))
    with pytest.raises(ArgumentError, match=r"x must have 64 channels \(the ProjectionMapper's\), got 32"):
        block(torch.randn(1, 32, 5, 5))
    with pytest.raises(ArgumentError, match=r"value must have 64 channels \(the GraphConvReasoner's\), got 16"):
        block(torch.randn(1, 64, 5, 5), value=torch.randn(1, 16, 5, 5))
    with pytest.raises(ArgumentError, match=r"query must have 64 channels"):
        block(torch.randn(1, 64, 5, 5), query=torch.randn(1, 3, 5, 5))
    assert block(torch.randn(1, 64, 5, 5)).shape == (1, 64, 5, 5)


@pytest.mark.parametrize("make", [
    lambda: ProjectionMapper(64, "8"),
    lambda: EMMapper(True, 8),
    lambda: EMMapper(64, 8, momentum=1.5),
    lambda: MatrixDecompositionMapper(64, 8, train_steps=-1),
    lambda: GraphConvReasoner(8, 2.5),
    lambda: LowRankBlock("mapper"),
])
def test_part_constructors_check_their_arguments(make):
    with pytest.raises(ArgumentError, match="must be"):
        make()
