// Package docker is the Docker daemon as an image source: it resolves an
// image ref (tag, name@digest or image ID) to an image whose digest is the
// image ID, with no manifest digest and the config ImageInspect describes
// (the daemon gives no config document), and streams the image's rootfs
// as one layer, the export of a
// container created from it and never started. The container is removed
// when the stream is closed; one that a killed import left behind is
// removed by the next import on the same host (see reap).
//
// This is the only package that imports the Docker client: Client is the
// subset of *client.Client it calls, so unit tests pass a fake and a move
// to another client touches this package alone.
package docker
