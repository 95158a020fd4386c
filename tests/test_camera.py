import numpy as np
import pytest
import torch

from recon_core.mesh.camera import (
    CROP_MARGIN, SHAPENET_TO_BLENDER, VIEW_TO_OUTPUT, Camera, blender_matrix_world, camera_from_blender,
    crop_camera, fit_projection, look_at, rotation_between, rotation_x, rotation_y, settle_on_base, stand_upright,
    to_pytorch3d,
)


@pytest.mark.parametrize("az,el", [(0, 0), (30, 20), (-120, 45), (200, -15), (90, 89.9)])
def test_look_at_geometry(az, el):
    cam = look_at(az, el, 2.0, 35.0, 32.0, 137, 137)
    assert np.allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(cam.R), 1.0)
    assert np.isclose(np.linalg.norm(cam.centre), 2.0)
    assert np.allclose(cam.T, [0, 0, 2.0])  # p_cam = p_view + (0, 0, d)
    assert np.allclose(cam.project(np.zeros((1, 3))), [[68.5, 68.5]])
    # world up projects upward in the image (v decreases) unless looking straight down
    if el < 80:
        up = cam.project(np.array([[0.0, 0.3, 0.0]]))[0]
        assert up[1] < 68.5


def test_front_view_sees_front_and_right():
    cam = look_at(0, 0, 2.0)
    front, back = cam.world_to_camera(np.array([[0, 0, -0.4], [0, 0, 0.4]]))
    assert front[2] < back[2]  # the object's front (-Z) is nearer the camera
    assert np.isclose(cam.centre[2], -2.0)
    cam90 = look_at(90, 0, 2.0)
    assert np.allclose(cam90.centre, [2.0, 0, 0], atol=1e-12)


def test_blender_round_trip_and_axes():
    for az, el in [(0, 0), (45, 30), (271, -20)]:
        cam = look_at(az, el, 1.8, 50.0, 36.0, 128, 128)
        m = blender_matrix_world(cam)
        back = camera_from_blender(m, 50.0, 36.0, 128, 128)
        assert np.allclose(back.R, cam.R) and np.allclose(back.T, cam.T) and np.allclose(back.K, cam.K)
        # Blender cameras look along local -Z, with local +Y up.
        forward = m[:3, :3] @ np.array([0, 0, -1.0])
        to_origin = -m[:3, 3] / np.linalg.norm(m[:3, 3])
        assert np.allclose(forward, to_origin)
        assert (m[:3, :3] @ np.array([0, 1.0, 0]))[2] > 0 or el < -80  # camera up has +Z (Blender up)
    assert np.allclose(SHAPENET_TO_BLENDER @ [0, 1, 0], [0, 0, 1])


def test_json_round_trip():
    cam = look_at(10, 20, 2.0)
    back = Camera.from_json(cam.to_json())
    assert np.allclose(back.R, cam.R) and np.allclose(back.K, cam.K) and back.width == cam.width


def test_crop_camera_matches_cropping_pixels():
    cam = look_at(33, 12, 2.0, width=200, height=200)
    pts = np.random.default_rng(0).uniform(-0.3, 0.3, (50, 3))
    box = (40.0, 30.0, 160.0, 150.0)
    cropped = crop_camera(cam, box, 64)
    uv = cam.project(pts)
    expected = (uv - [box[0], box[1]]) * 64 / (box[2] - box[0])
    assert np.allclose(cropped.project(pts), expected)


def test_pytorch3d_cameras_agree_with_opencv_projection():
    cam = look_at(25, 15, 2.0, 35, 32, 96, 96)
    pts = np.random.default_rng(1).uniform(-0.3, 0.3, (20, 3))
    p3d = to_pytorch3d([cam])
    screen = p3d.transform_points_screen(torch.tensor(pts, dtype=torch.float32)[None], image_size=((96, 96),))[0]
    assert np.allclose(screen[:, :2].numpy(), cam.project(pts), atol=1e-3)


def test_view_to_output_is_a_rotation_with_y_up():
    assert np.isclose(np.linalg.det(VIEW_TO_OUTPUT), 1.0)
    cam = look_at(0, 0, 2.0)
    up_out = VIEW_TO_OUTPUT @ cam.R @ np.array([0, 1.0, 0])
    assert np.allclose(up_out, [0, 1, 0])  # a level camera keeps world up as output up


def test_fit_projection_fills_the_crop_box():
    verts = torch.randn(2, 100, 3) * torch.tensor([0.2, 0.5, 0.1])
    uv = fit_projection(verts, 64)
    lo, hi = uv.amin(1), uv.amax(1)
    span = (hi - lo).amax(1)
    assert torch.allclose(span, torch.full((2,), (1 - 2 * CROP_MARGIN) * 64), atol=1e-4)
    assert torch.allclose((lo + hi) / 2, torch.full((2, 2), 32.0), atol=1e-4)


def _householder(v: np.ndarray) -> np.ndarray:
    """(3, 3) reflection across the plane square to ``v``."""
    v = np.asarray(v, dtype=np.float64)
    return np.eye(3) - 2.0 * np.outer(v, v) / float(v @ v)


def test_rotation_between_equals_two_reflections_and_turns_by_the_least_angle():
    """The least turn from a to b is the reflection across the plane square to a, then across the one square to
    a + b (a naive twin of Rodrigues' formula): it takes a to b, fixes a x b and turns by the angle between them."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = rng.normal(size=3), rng.normal(size=3)
        got = rotation_between(a, b)
        ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
        np.testing.assert_allclose(got, _householder(ua + ub) @ _householder(ua), atol=1e-9)
        np.testing.assert_allclose(got @ ua, ub, atol=1e-9)
        np.testing.assert_allclose(got @ got.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(got) == pytest.approx(1.0)
        axis = np.cross(ua, ub)
        np.testing.assert_allclose(got @ axis, axis, atol=1e-9)
        angle = np.arccos(np.clip((np.trace(got) - 1) / 2, -1, 1))
        assert angle == pytest.approx(np.arccos(np.clip(ua @ ub, -1, 1)), abs=1e-7)
    np.testing.assert_allclose(rotation_between([0, 2, 0], [0, 1, 0]), np.eye(3))
    for a in ([0.0, 1.0, 0.0], [0.3, -0.2, 0.9]):  # opposite directions: a half turn, still a rotation
        half = rotation_between(a, -np.asarray(a))
        np.testing.assert_allclose(half @ (np.asarray(a) / np.linalg.norm(a)), -np.asarray(a) / np.linalg.norm(a),
                                   atol=1e-12)
        assert np.linalg.det(half) == pytest.approx(1.0)


def test_stand_upright_makes_the_objects_up_the_frames_and_keeps_its_heading():
    """Points whose own +Y the camera sees leaning (looked at from 30 degrees above, turned 40 degrees) are stood
    upright: their own heights become the frame's and their turn about the vertical stays (up to a shift)."""
    rng = np.random.default_rng(1)
    own = rng.uniform(-1, 1, (500, 3)) * [0.3, 0.5, 0.2]  # the object in its own frame, +Y up
    turned = rotation_y(40.0)
    seen = own @ (rotation_x(30.0) @ turned).T + [0.1, -0.2, 0.3]  # as a camera above it sees it
    up = rotation_x(30.0) @ turned @ [0.0, 1.0, 0.0]
    stood = stand_upright(seen, up)
    np.testing.assert_allclose(stood, (own - own.mean(0)) @ turned.T + (stood - (own - own.mean(0)) @ turned.T).mean(0),
                               atol=1e-9)
    assert np.ptp(stood[:, 1]) == pytest.approx(np.ptp(own[:, 1]))
    assert abs(np.ptp(seen[:, 1]) - np.ptp(own[:, 1])) > 0.05  # as seen, its height is not its own: the test can fail


def test_the_turn_to_stand_is_the_angle_of_the_least_rotation():
    """Reconstructor._turn_to_stand (the 45-degree cap's measure) is the angle stand_upright turns by: that of
    rotation_between(up, +Y), for ups leaning by known angles."""
    from types import SimpleNamespace

    from recon_core.io.inference import Reconstructor

    for elevation in (0.0, 12.0, 44.0, 46.0, 80.0):
        rotation = rotation_x(elevation) @ rotation_y(30.0)  # a camera above the object, turned about it
        bank = SimpleNamespace(view_rotation=torch.tensor(VIEW_TO_OUTPUT @ rotation)[None])  # view = out, flipped
        rec = SimpleNamespace(model=SimpleNamespace(bank=bank))
        rec._object_up = lambda row, pose=None, rec=rec: Reconstructor._object_up(rec, row, pose)
        turn = Reconstructor._turn_to_stand(rec, 0)
        up = Reconstructor._object_up(rec, 0)
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation_between(up, [0, 1, 0])) - 1) / 2, -1, 1)))
        assert turn == pytest.approx(angle, abs=1e-6) and turn == pytest.approx(elevation, abs=1e-6)


def _stool(short: float = 0.0):
    """A closed stool: a box seat on four box legs (one ``short`` shorter, at +x +z), as one mesh of five closed parts;
    the seat reaches further over the other legs, so its centre of mass stands over their triangle."""
    import trimesh

    parts = [trimesh.creation.box([1.2, 0.1, 1.2], trimesh.transformations.translation_matrix([-0.1, 1.0, -0.1]))]
    for i, (x, z) in enumerate(((-0.4, -0.4), (0.4, -0.4), (-0.4, 0.4), (0.4, 0.4))):
        length = 1.0 - (short if i == 3 else 0.0)
        parts.append(trimesh.creation.box([0.1, length, 0.1],
                                          trimesh.transformations.translation_matrix([x, 1.0 - length / 2, z])))
    return trimesh.util.concatenate(parts)


def test_settle_on_base_rests_a_stool_with_a_short_leg_on_three_legs_over_its_centre_of_mass():
    """A stool with one leg 0.05 short (and leaning a little more) settles on the three others: their feet share the
    lowest height, its centre of mass stands over their triangle, and the turn is the least that does it."""
    stool = _stool(short=0.05)
    verts = stool.vertices @ rotation_x(2.0).T
    settled, turned = settle_on_base(verts, stool.faces)
    assert 0.0 < turned < 10.0
    low = settled[:, 1].min()
    tips = []
    for x, z in ((-0.4, -0.4), (0.4, -0.4), (-0.4, 0.4)):
        near = np.linalg.norm(verts[:, [0, 2]] - [x, z], axis=1) < 0.2  # each long leg's vertices (turn is small)
        tips.append(settled[near, 1].min())
    np.testing.assert_allclose(tips, low, atol=1e-9)
    short = np.linalg.norm(verts[:, [0, 2]] - [0.4, 0.4], axis=1) < 0.2
    assert settled[short, 1].min() > low + 0.02
    # its centre of mass stands over the three feet's triangle (barycentric coordinates all positive)
    feet = np.array([settled[np.linalg.norm(verts[:, [0, 2]] - c, axis=1) < 0.2][np.argmin(
        settled[np.linalg.norm(verts[:, [0, 2]] - c, axis=1) < 0.2][:, 1])][[0, 2]]
        for c in ((-0.4, -0.4), (0.4, -0.4), (-0.4, 0.4))])
    mass = trimesh_centre_of_mass(settled, stool.faces)[[0, 2]]
    weights = np.linalg.solve(np.vstack([feet.T, np.ones(3)]), np.r_[mass, 1.0])
    assert (weights > 0).all(), weights


def test_settle_on_base_leaves_a_mesh_that_rests_already_or_would_turn_too_far():
    stool = _stool()
    settled, turned = settle_on_base(stool.vertices, stool.faces)
    assert turned == 0.0 and np.array_equal(settled, stool.vertices)
    leaning = stool.vertices @ rotation_x(25.0).T  # beyond the 20 degrees a mesh stood upright may still lean
    settled, turned = settle_on_base(leaning, stool.faces)
    assert turned == 0.0 and np.array_equal(settled, leaning)
    settled, turned = settle_on_base(leaning, stool.faces, max_turn=30.0)
    assert turned == pytest.approx(25.0, abs=1e-6)


def trimesh_centre_of_mass(verts, faces):
    import trimesh

    return np.asarray(trimesh.Trimesh(verts, faces, process=False).center_mass)


def test_solid_centroid_is_trimesh_s_centre_of_mass():
    """The volume-weighted centroid settle_on_base uses, against trimesh's centre of mass (an independent reference),
    for a stool off the origin."""
    from recon_core.mesh.printable import solid_centroid

    stool = _stool(short=0.3)
    verts = stool.vertices + [2.0, -1.0, 0.5]
    np.testing.assert_allclose(solid_centroid(verts, stool.faces), trimesh_centre_of_mass(verts, stool.faces),
                               atol=1e-9)


def test_settle_on_base_tips_onto_the_short_leg_when_the_mass_stands_over_it():
    """The seat reaching far over the short leg: the centre of mass stands outside the three long legs' triangle, so
    the lowest facet is no rest; the stool settles on the short leg and its neighbours instead (the nearest facet
    down would have left it to tip)."""
    import trimesh

    parts = [trimesh.creation.box([1.4, 0.1, 1.4], trimesh.transformations.translation_matrix([0.3, 1.0, 0.3]))]
    for i, (x, z) in enumerate(((-0.4, -0.4), (0.4, -0.4), (-0.4, 0.4), (0.4, 0.4))):
        length = 0.98 if i == 3 else 1.0
        parts.append(trimesh.creation.box([0.1, length, 0.1],
                                          trimesh.transformations.translation_matrix([x, 1.0 - length / 2, z])))
    stool = trimesh.util.concatenate(parts)
    settled, turned = settle_on_base(stool.vertices, stool.faces)
    assert 0.0 < turned < 5.0
    tip = lambda c, v: v[np.linalg.norm(stool.vertices[:, [0, 2]] - c, axis=1) < 0.2][:, 1].min()  # noqa: E731
    low = settled[:, 1].min()
    assert tip((0.4, 0.4), settled) == pytest.approx(low, abs=1e-9)  # the short leg touches
    assert tip((-0.4, -0.4), settled) > low + 0.005  # the far long leg lifts
    mass = trimesh_centre_of_mass(settled, stool.faces)[[0, 2]]
    feet = np.array([[x, z] for x, z in ((0.4, -0.4), (-0.4, 0.4), (0.4, 0.4))])  # near enough after a small turn
    weights = np.linalg.solve(np.vstack([feet.T, np.ones(3)]), np.r_[mass, 1.0])
    assert (weights > 0).all(), weights


# ---------------------------------------------------------------------------------- the picture's camera


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_rigid_motion_recovers_a_turn_and_a_shift_and_never_a_mirror():
    from recon_core.mesh.camera import rigid_motion

    rng = np.random.default_rng(3)
    points = rng.normal(size=(50, 3))
    for _ in range(5):
        turn, shift = _random_rotation(rng), rng.normal(size=3)
        got_turn, got_shift = rigid_motion(points, points @ turn.T + shift)
        np.testing.assert_allclose(got_turn, turn, atol=1e-12)
        np.testing.assert_allclose(got_shift, shift, atol=1e-12)
    # the stand and settle of the reconstruction: turns about a box's centre
    stood = stand_upright(points, np.array([0.3, 1.0, -0.2]))
    turn, shift = rigid_motion(points, stood)
    np.testing.assert_allclose(points @ turn.T + shift, stood, atol=1e-12)
    # a mirror image is not a motion: the best rotation, not the reflection
    turn, _ = rigid_motion(points, points * [1.0, 1.0, -1.0])
    assert np.linalg.det(turn) == pytest.approx(1.0)


def test_seen_camera_moves_with_the_mesh():
    """A point seen by the picture's camera is seen at the same camera coordinates once the mesh and the camera moved
    together; unmoved, the camera sits on +Z looking toward -Z, +Y up (the output frame's convention)."""
    from recon_core.mesh.camera import seen_camera

    rotation, centre = seen_camera(1.9)
    np.testing.assert_array_equal(centre, [0.0, 0.0, 1.9])
    cam = (np.array([[0.0, 0.3, 0.0], [0.2, 0.0, -0.5]]) - centre) @ rotation.T
    assert cam[0, 1] < 0 and cam[1, 0] > 0 and (cam[:, 2] > 0).all()  # up is image-up, right is right, in front
    rng = np.random.default_rng(4)
    points = rng.normal(scale=0.3, size=(20, 3))
    turn, shift = _random_rotation(rng), rng.normal(size=3)
    moved_rotation, moved_centre = seen_camera(1.9, (turn, shift))
    np.testing.assert_allclose((points @ turn.T + shift - moved_centre) @ moved_rotation.T,
                               (points - centre) @ rotation.T, atol=1e-12)


def test_picture_camera_puts_the_meshs_projection_on_the_masks_box():
    """The fitted focal length and principal point take the box of the vertices' projections onto the mask's box along
    its longer side and to its centre (pixel corners: a mask of columns 30..69 spans u 30..70); an empty mask, or a
    vertex behind the camera, gives None."""
    from recon_core.mesh.camera import picture_camera, seen_camera

    rng = np.random.default_rng(5)
    verts = rng.uniform(-0.3, 0.3, size=(200, 3)) * [1.0, 0.5, 1.0]
    rotation, centre = seen_camera(1.9)
    mask = np.zeros((120, 160))
    mask[40:61, 30:70] = 1.0  # 40 wide, 21 high
    camera = picture_camera(verts, rotation, centre, mask)
    assert (camera.width, camera.height) == (160, 120)
    uv = camera.project(verts)
    assert uv[:, 0].min() == pytest.approx(30.0) and uv[:, 0].max() == pytest.approx(70.0)
    assert (uv[:, 1].min() + uv[:, 1].max()) / 2 == pytest.approx(50.5)
    np.testing.assert_allclose(camera.centre, centre, atol=1e-12)
    assert camera.K[0, 0] == camera.K[1, 1] > 0
    assert picture_camera(verts, rotation, centre, np.zeros((120, 160))) is None
    assert picture_camera(verts, rotation, [0.0, 0.0, 0.1], mask) is None
