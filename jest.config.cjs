// Jest runs only the suite that shows the package works there (see __test__/jest).
module.exports = {
  testMatch: ['<rootDir>/__test__/jest/**/*.jest.cjs'],
  testEnvironment: 'node',
}
