import itertools

import torch

from hoi.geometry.chamfer import chamfer_distance


def brute_force_chamfer(a: torch.Tensor, b: torch.Tensor) -> float:
    """The definition, point by point, for one pair of sets (P, 3), (Q, 3)."""
    def one_way(x, y):
        return sum(min(float(((xi - yj) ** 2).sum()) for yj in y) for xi in x) / len(x)
    return one_way(a, b) + one_way(b, a)


def grid_points(n: int) -> torch.Tensor:
    """n points of an integer grid, spacing 1: nearest neighbours are unambiguous under small
    displacements."""
    cube = list(itertools.product(range(6), repeat=3))[:n]
    return torch.tensor(cube, dtype=torch.float64)


def test_hand_computed_sets_of_different_sizes():
    a = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.0]])
    # a -> b: (0 + 4) / 2 = 2; b -> a: 0.
    torch.testing.assert_close(chamfer_distance(a, b), torch.tensor(2.0))
    c = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.5]])
    # a -> c: point 0 nearest c0 (2), point 1 nearest c2 (0.25): 1.125;
    # c -> a: c0 -> 2, c1 -> 9, c2 -> 0.25: 11.25 / 3 = 3.75.
    torch.testing.assert_close(chamfer_distance(a, c), torch.tensor(1.125 + 3.75))


def test_matches_the_definition_on_random_sets_with_batch_dimensions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 7, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, 5, 3, generator=g, dtype=torch.float64)
    d = chamfer_distance(a, b)
    assert d.shape == (2, 3)
    for i, j in itertools.product(range(2), range(3)):
        assert abs(float(d[i, j]) - brute_force_chamfer(a[i, j], b[i, j])) < 1e-12


def test_a_set_against_itself_is_zero_and_a_small_translation_costs_twice_its_square():
    a = grid_points(149)
    assert float(chamfer_distance(a, a)) == 0.0
    shift = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    # Every point's nearest neighbour is its own translated copy, at |shift|^2, both ways.
    torch.testing.assert_close(chamfer_distance(a + shift, a), 2 * shift.square().sum())


def test_symmetric_and_invariant_to_point_order_within_a_set():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 9, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    d = chamfer_distance(a, b)
    torch.testing.assert_close(chamfer_distance(b, a), d)
    permuted = chamfer_distance(a[:, torch.randperm(9, generator=g)],
                                b[:, torch.randperm(6, generator=g)])
    torch.testing.assert_close(permuted, d)


def test_broadcasts_leading_dimensions():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 1, 8, 3, generator=g), torch.randn(1, 3, 5, 3, generator=g)
    d = chamfer_distance(a, b)
    assert d.shape == (4, 3)
    torch.testing.assert_close(d[2, 1], chamfer_distance(a[2, 0], b[0, 1]))


def test_chunked_search_gives_the_same_result():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(10, 12, 3, generator=g), torch.randn(10, 11, 3, generator=g)
    one_set_per_chunk = 12 * 11 * 3
    torch.testing.assert_close(chamfer_distance(a, b, chunk_elements=one_set_per_chunk),
                               chamfer_distance(a, b))


def test_gradients_are_those_of_the_definition():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(chamfer_distance, (a, b))


def test_gradient_pulls_each_point_towards_its_nearest_neighbour():
    a = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], requires_grad=True)
    b = torch.tensor([[0.5, 0.0, 0.0]])
    chamfer_distance(a, b).backward()
    # a -> b: d/da_i of |a_i - b|^2 / 2 = (a_i - b); b -> a: b's nearest is a_0, so
    # d/da_0 of |b - a_0|^2 / 1 = -2 (b - a_0) = (-1, 0, 0) is added to a_0.
    torch.testing.assert_close(a.grad, torch.tensor([[-0.5 - 1.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
